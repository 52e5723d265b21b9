# Population-level predictions with standard errors from glmmTMB, for midas_glmm's
# get_prediction() tests (issue 14, item 6).
# Usage (from tests/reference): Rscript predictions/make_predictions.R
# Writes predictions/<case>.json: glmmTMB's predict(m, newdata, se.fit = TRUE, re.form = NA) on
# the link scale (fit, se.fit) on every 7th row of the data. Gaussian models are fitted by ML:
# with REML = TRUE glmmTMB integrates the fixed effects out and its se.fit is not that of
# the REML fixed effects (3.5 against lme4 and glmmTMB-ML 6.6-6.8 for sleepstudy).
suppressPackageStartupMessages({ library(glmmTMB); library(jsonlite) })

cases <- list(
  list(case = "sleepstudy_slope_ml", data = "data/sleepstudy.csv", f = Reaction ~ Days + (Days | Subject),
       py = "Reaction ~ Days + (Days|Subject)", family = gaussian(), REML = FALSE, factors = "Subject"),
  list(case = "cbpp_binomial", data = "data/cbpp.csv", f = cbind(incidence, size - incidence) ~ period + (1 | herd),
       py = "cbind(incidence, size - incidence) ~ C(period) + (1|herd)", family = binomial(), REML = FALSE,
       factors = c("herd", "period")),
  list(case = "poisson_crossed", data = "extra/data/poisson_crossed.csv", f = y ~ x + (1 | a) + (1 | b),
       py = "y ~ x + (1|a) + (1|b)", family = poisson(), REML = FALSE, factors = c("a", "b")),
  list(case = "crossed_slopes_ml", data = "extra/data/crossed.csv", f = y ~ x + (x | subj) + (1 | item),
       py = "y ~ x + (x|subj) + (1|item)", family = gaussian(), REML = FALSE, factors = c("subj", "item"))
)
for (cs in cases) {
  df <- read.csv(cs$data)
  for (v in cs$factors) df[[v]] <- factor(df[[v]])
  m <- glmmTMB(cs$f, data = df, family = cs$family, REML = cs$REML)
  new <- df[seq(1, nrow(df), by = 7), ]
  p <- predict(m, newdata = new, se.fit = TRUE, re.form = NA, type = "link")
  out <- list(case = cs$case, reference = paste0("glmmTMB ", packageVersion("glmmTMB"), ", ", R.version.string),
              data = cs$data, rows = seq(1, nrow(df), by = 7) - 1, formula_r = paste(deparse(cs$f), collapse = ""),
              formula_py = cs$py, family = cs$family$family, REML = cs$REML, logLik = as.numeric(logLik(m)),
              fit = unname(as.numeric(p$fit)), se_fit = unname(as.numeric(p$se.fit)))
  write(toJSON(out, auto_unbox = TRUE, digits = NA), file.path("predictions", paste0(cs$case, ".json")))
  cat(cs$case, head(out$se_fit, 3), "\n")
}
