# glmmTMB's ou (Ornstein-Uhlenbeck over unequally spaced times) reference fits, for
# tests/engine/test_structures_reference.py. Run: cd tests/reference/covstruct && Rscript make_ou.R
# Writes ou.csv and ou.json: Gaussian ML and REML and a Poisson fit of ou(numFactor(t) + 0 | g),
# with glmmTMB's log-likelihood, fixed effects and SEs, the GLS SEs (Gaussian), the term's SDs and
# correlation matrix, and ou's parameters (sd = exp(theta_1); the correlation one time unit apart,
# rho = exp(-exp(theta_2)); cor(i, j) = exp(-exp(theta_2) |t_i - t_j|)).
suppressPackageStartupMessages({ library(glmmTMB); library(jsonlite) })
set.seed(20241204)
G <- 50; times <- c(0, 1, 2.5, 4, 7)
d <- expand.grid(t = times, g = sprintf("g%02d", 1:G), stringsAsFactors = FALSE)
d$g <- factor(d$g)
d$x <- round(rnorm(nrow(d)), 4)
S <- outer(times, times, function(a, b) exp(-abs(a - b) / 2))
b <- t(sapply(1:G, function(i) 0.8 * drop(crossprod(chol(S), rnorm(length(times))))))
cell <- cbind(as.integer(d$g), match(d$t, times))
d$y <- round(1 + 0.5 * d$x + b[cell] + rnorm(nrow(d), 0, 0.5), 5)
d$count <- rpois(nrow(d), exp(0.3 + 0.4 * d$x + 0.7 * b[cell]))
d$pos <- numFactor(d$t)
write.csv(d[, c("y", "count", "x", "t", "g")], "ou.csv", row.names = FALSE)

record <- function(m, reml, gaussian) {
  vc <- VarCorr(m)$cond$g
  th <- m$fit$par[names(m$fit$par) == "theta"]
  out <- list(call = list(formula = deparse(formula(m)), REML = reml, family = family(m)$family),
              loglik = as.numeric(logLik(m)), df = attr(logLik(m), "df"),
              fixef = unname(fixef(m)$cond), fixef_names = names(fixef(m)$cond),
              fixef_se = unname(sqrt(diag(vcov(m)$cond))),
              sigma = if (gaussian) sigma(m) else NULL,
              stddev = unname(attr(vc, "stddev")), correlation = unname(attr(vc, "correlation")),
              theta = unname(th), sd = exp(th[1]), rho = exp(-exp(th[2])),
              convergence = m$fit$convergence, pdHess = m$sdr$pdHess)
  if (gaussian) {  # the GLS SEs at glmmTMB's estimates, V = Z G Z' + sigma^2 I
    X <- model.matrix(~ x, d); n <- nrow(d); k <- match(d$t, times)
    V <- as.matrix(vc)[cbind(k[rep(1:n, n)], k[rep(1:n, each = n)])]  # the term's covariance of rows i, j
    V <- matrix(V, n, n) * outer(as.integer(d$g), as.integer(d$g), "==") + diag(sigma(m)^2, n)
    out$fixef_se_gls <- unname(sqrt(diag(solve(t(X) %*% solve(V, X)))))
  }
  out
}
fits <- list(
  glmmTMB_ML = record(glmmTMB(y ~ x + ou(pos + 0 | g), d, REML = FALSE), FALSE, TRUE),
  glmmTMB_REML = record(glmmTMB(y ~ x + ou(pos + 0 | g), d, REML = TRUE), TRUE, TRUE),
  glmmTMB_poisson = record(glmmTMB(count ~ x + ou(pos + 0 | g), d, family = poisson), FALSE, FALSE)
)
versions <- list(R = R.version.string, glmmTMB = format(packageVersion("glmmTMB")), TMB = format(packageVersion("TMB")))
write_json(list(case = "ou", versions = versions,
                description = "50 groups x times 0, 1, 2.5, 4, 7; b ~ 0.8 * OU(cor exp(-|dt|/2)); y = 1 + 0.5 x + b + N(0, 0.5^2); count ~ Poisson(exp(0.3 + 0.4 x + 0.7 b)); seed 20241204",
                data = list(file = "ou.csv", nobs = nrow(d), factor_levels = list(g = levels(d$g))),
                formulas = list(midas = "y ~ x + ou(C(t) + 0 | g)", glmmTMB = "y ~ x + ou(pos + 0 | g), pos = numFactor(t)"),
                fits = fits),
           "ou.json", digits = NA, auto_unbox = TRUE, pretty = TRUE)
