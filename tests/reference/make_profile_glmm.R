# Profile-likelihood intervals of GLMMs from lme4 (confint(method = "profile")), fitted with a
# tight PIRLS tolerance (see make_tight.R). Usage (from tests/reference): Rscript make_profile_glmm.R
suppressPackageStartupMessages({ library(lme4); library(jsonlite) })
cases <- list(
  list(name = "cbpp_binomial_laplace", data = "data/cbpp.csv", f = cbind(incidence, size - incidence) ~ period + (1 | herd),
       factors = c("herd", "period"), family = binomial()),
  list(name = "poisson_offset_laplace", data = "data/poisson_hospitals.csv", f = y ~ x + offset(log(exposure)) + (1 | hospital),
       factors = "hospital", family = poisson()))
dir.create("profile_glmm", showWarnings = FALSE)
for (cs in cases) {
  d <- read.csv(cs$data)
  for (v in cs$factors) d[[v]] <- factor(d[[v]])
  m <- glmer(cs$f, data = d, family = cs$family, control = glmerControl(tolPwrss = 1e-12))
  ci <- suppressWarnings(confint(m, method = "profile", oldNames = FALSE))
  out <- list(case = cs$name, reference = paste0("lme4 ", packageVersion("lme4"), " confint(method = 'profile'), tolPwrss = 1e-12"),
              names = rownames(ci), lower = unname(ci[, 1]), upper = unname(ci[, 2]))
  writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), file.path("profile_glmm", paste0(cs$name, ".json")))
}
