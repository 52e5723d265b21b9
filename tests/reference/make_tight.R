# Refits the lme4 GLMM reference cases with a tight PIRLS tolerance (tolPwrss = 1e-12).
# lme4's default (1e-7) stops PIRLS early; its Laplace deviance is then off by up to ~6e-4 and
# the finite-difference Hessian behind vcov() picks up that noise (cbpp: SEs off by ~1%).
# Usage: Rscript make_tight.R   (from tests/reference; writes tight/CASE.json)
suppressPackageStartupMessages({ library(lme4); library(jsonlite) })
cases <- list(
  list(name = "cbpp_binomial_laplace", data = "data/cbpp.csv", f = cbind(incidence, size - incidence) ~ period + (1 | herd),
       factors = c("herd", "period"), family = binomial(), nAGQ = 1),
  list(name = "binary_laplace", data = "data/binary_clinics.csv", f = y ~ x + (1 | clinic), factors = "clinic",
       family = binomial(), nAGQ = 1),
  list(name = "poisson_offset_laplace", data = "data/poisson_hospitals.csv", f = y ~ x + offset(log(exposure)) + (1 | hospital),
       factors = "hospital", family = poisson(), nAGQ = 1),
  list(name = "binomial_slope_laplace", data = "extra/data/binomial_slope.csv", f = y ~ x + (x | g), factors = "g",
       family = binomial(), nAGQ = 1),
  list(name = "binomial_probit_laplace", data = "extra/data/binomial_slope.csv", f = y ~ x + (1 | g), factors = "g",
       family = binomial(link = "probit"), nAGQ = 1),
  list(name = "poisson_crossed_laplace", data = "extra/data/poisson_crossed.csv", f = y ~ x + (1 | a) + (1 | b),
       factors = c("a", "b"), family = poisson(), nAGQ = 1),
  list(name = "cbpp_proportion_weights", data = "extra/data/cbpp_prop.csv", f = prop ~ period + (1 | herd),
       factors = c("herd", "period"), family = binomial(), nAGQ = 1, weights = "size"))
for (cs in cases) {
  d <- read.csv(cs$data)
  for (v in cs$factors) d[[v]] <- factor(d[[v]])
  d$.w <- if (is.null(cs$weights)) 1 else d[[cs$weights]]
  m <- glmer(cs$f, data = d, family = cs$family, nAGQ = cs$nAGQ, weights = .w, control = glmerControl(tolPwrss = 1e-12))
  out <- list(case = cs$name, reference = paste0("lme4 ", packageVersion("lme4"), " glmer with glmerControl(tolPwrss = 1e-12)"),
              loglik = as.numeric(logLik(m)), fixef = unname(fixef(m)), fixef_se = unname(sqrt(diag(as.matrix(vcov(m))))),
              theta = unname(getME(m, "theta")))
  writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), file.path("tight", paste0(cs$name, ".json")))
}
