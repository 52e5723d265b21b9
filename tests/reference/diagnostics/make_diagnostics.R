# Residuals and Nakagawa R^2 of reference fits, for midas_glmm's tests (issue 14).
# Usage (from tests/reference): Rscript diagnostics/make_diagnostics.R
# Writes diagnostics/<case>.json with lme4's residuals(m, type = "pearson" | "deviance" |
# "response") and performance::r2_nakagawa(m). Data: the reference data sets next to this
# directory (data/, extra/data/); obs-level Poisson adds a row-number factor to poisson_crossed.
# GLMMs are fitted with glmerControl(tolPwrss = 1e-12): lme4's default PIRLS tolerance stops
# early and moves the fitted values by ~1e-4 (see make_tight.R).
suppressPackageStartupMessages({ library(lme4); library(performance); library(jsonlite) })

cases <- list(
  list(case = "sleepstudy_slope_reml", data = "data/sleepstudy.csv", f = Reaction ~ Days + (Days | Subject),
       py = "Reaction ~ Days + (Days|Subject)", family = "gaussian"),
  list(case = "sleepstudy_weights_reml", data = "extra/data/sleepstudy_weights.csv",
       f = Reaction ~ Days + (Days | Subject), py = "Reaction ~ Days + (Days|Subject)", family = "gaussian",
       weights = "w"),
  list(case = "crossed_slopes_reml", data = "extra/data/crossed.csv", f = y ~ x + (x | subj) + (1 | item),
       py = "y ~ x + (x|subj) + (1|item)", family = "gaussian"),
  list(case = "binary_laplace", data = "data/binary_clinics.csv", f = y ~ x + (1 | clinic),
       py = "y ~ x + (1|clinic)", family = "binomial"),
  list(case = "cbpp_binomial_laplace", data = "data/cbpp.csv", factors = c("herd", "period"),
       f = cbind(incidence, size - incidence) ~ period + (1 | herd),
       py = "cbind(incidence, size - incidence) ~ C(period) + (1|herd)", family = "binomial"),
  list(case = "binomial_probit_laplace", data = "extra/data/binomial_slope.csv", f = y ~ x + (1 | g),
       py = "y ~ x + (1|g)", family = "binomial", link = "probit"),
  list(case = "poisson_crossed_laplace", data = "extra/data/poisson_crossed.csv", f = y ~ x + (1 | a) + (1 | b),
       py = "y ~ x + (1|a) + (1|b)", family = "poisson"),
  list(case = "poisson_obslevel_laplace", data = "extra/data/poisson_crossed.csv", f = y ~ x + (1 | a) + (1 | obs),
       py = "y ~ x + (1|a) + (1|obs)", family = "poisson", obs = TRUE)
)

for (cs in cases) {
  df <- read.csv(cs$data)
  if (isTRUE(cs$obs)) df$obs <- factor(seq_len(nrow(df)))
  for (v in names(df)) if (is.character(df[[v]]) || v %in% cs$factors) df[[v]] <- factor(df[[v]])
  if (cs$family == "gaussian") {
    m <- if (is.null(cs$weights)) lmer(cs$f, data = df) else lmer(cs$f, data = df, weights = df[[cs$weights]])
  } else {
    fam <- if (cs$family == "binomial") binomial(link = if (is.null(cs$link)) "logit" else cs$link) else poisson()
    m <- glmer(cs$f, data = df, family = fam, control = glmerControl(tolPwrss = 1e-12))
  }
  r2 <- suppressWarnings(r2_nakagawa(m))
  out <- list(
    case = cs$case,
    reference = paste0("lme4 ", packageVersion("lme4"), if (cs$family != "gaussian") " (tolPwrss = 1e-12)" else "",
                       ", performance ", packageVersion("performance"),
                       ", insight ", packageVersion("insight"), ", ", R.version.string),
    data = cs$data, formula_r = paste(deparse(cs$f), collapse = ""), formula_py = cs$py,
    family = cs$family, link = if (is.null(cs$link)) NULL else cs$link,
    weights = if (is.null(cs$weights)) NULL else cs$weights, obs_level = isTRUE(cs$obs),
    logLik = as.numeric(logLik(m)),
    resid_pearson = unname(residuals(m, type = "pearson")),
    resid_deviance = unname(residuals(m, type = "deviance")),
    resid_response = unname(residuals(m, type = "response")),
    r2_marginal = unname(r2$R2_marginal), r2_conditional = unname(r2$R2_conditional)
  )
  write(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null"), file.path("diagnostics", paste0(cs$case, ".json")))
  cat(cs$case, out$r2_marginal, out$r2_conditional, "\n")
}
