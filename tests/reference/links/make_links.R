# Reference fits of a Gaussian GLMM with a non-identity link (glmer fits it; glmmTMB's Laplace is
# the one midas_glmm follows, as for Gamma: the observed information in the log-determinant).
# Usage (from tests/reference/links): Rscript make_links.R
# The data, gaussian_log.csv, were simulated in Python (numpy seed 0): 300 rows, 15 groups,
# y = exp(1 + 0.3 x + u_g) + N(0, 0.2^2), u_g ~ N(0, 0.3^2).
suppressPackageStartupMessages({ library(glmmTMB); library(jsonlite) })
d <- read.csv("gaussian_log.csv"); d$g <- factor(d$g)
m <- glmmTMB(y ~ x + (1 | g), d, family = gaussian(link = "log"))
vc <- VarCorr(m)$cond$g
out <- list(case = "gaussian_log_tmb", reference = paste0("glmmTMB ", packageVersion("glmmTMB"), ", ", R.version.string),
            data = "gaussian_log.csv", formula_py = "y ~ x + (1|g)", family = "gaussian", link = "log",
            fixef = unname(fixef(m)$cond), fixef_se = unname(sqrt(diag(vcov(m)$cond))),
            sd_g = unname(attr(vc, "stddev")), sigma = sigma(m), loglik = as.numeric(logLik(m)))
write_json(out, "gaussian_log_tmb.json", digits = NA, auto_unbox = TRUE, pretty = TRUE)
