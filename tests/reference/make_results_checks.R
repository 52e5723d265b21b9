# Reference numbers for the results object's checks (tests/test_results_checks.py):
#
# * deviance.json — lme4's deviance() of every lme4 GLMM reference case, with the default
#   control and refitted with glmerControl(tolPwrss = 1e-12) (see make_tight.R: the default
#   stops PIRLS early), and -2 logLik of the tight refit. For a glmerMod, deviance() is the sum
#   of the squared deviance residuals, i.e. of the family's unit deviances at the conditional
#   fitted values, not -2 logLik. For the glmmTMB Gamma case (glmmTMB has no such deviance) the
#   same sum, from R's Gamma()$dev.resids at glmmTMB's conditional fitted values.
# * predict.json — lme4's predict(newdata, allow.new.levels = TRUE) where newdata holds a level
#   the fit did not see, a missing grouping value (lme4 treats it as a new level: population
#   prediction) and a missing predictor (NA, as na.pass), for a fit whose grouping column is
#   numeric (sleepstudy with Subject as a number) and for cbpp. The message lme4 gives for a
#   level of a fixed-effect factor the fit did not see is kept for information.
#
# Usage (from tests/reference): Rscript make_results_checks.R   (writes extra/results_checks/)
suppressPackageStartupMessages({ library(lme4); library(glmmTMB); library(jsonlite) })
out_dir <- file.path("extra", "results_checks")
dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)

# Read a case's data as test_reference.py does: columns used in C(...) or as grouping factors
# become factors, everything else keeps read.csv's type.
case_frame <- function(ref, dir) {
  d <- read.csv(file.path(dir, ref$data), stringsAsFactors = FALSE)
  f <- as.formula(ref$formula_r)
  grouping <- unique(unlist(lapply(findbars(f), function(b) all.vars(b[[3]]))))
  in_C <- regmatches(ref$formula_py, gregexpr("C\\(([A-Za-z_.][A-Za-z0-9_.]*)\\)", ref$formula_py))[[1]]
  in_C <- gsub("^C\\(|\\)$", "", in_C)
  for (v in unique(c(grouping, in_C, names(d)[sapply(d, is.character)]))) d[[v]] <- factor(d[[v]])
  d$.w <- if (is.null(ref$weights)) 1 else d[[ref$weights]]
  d
}

refs <- c(Sys.glob("*.json"), Sys.glob("extra/*.json"))
deviance_out <- list()
for (path in refs) {
  ref <- fromJSON(path)
  if (ref$family == "gaussian" || ref$case == "gamma_log_lme4") next
  d <- case_frame(ref, dirname(path))
  fam <- get(ref$family)(link = ref$link)
  if (startsWith(ref$reference, "glmmTMB")) {
    m <- glmmTMB(as.formula(ref$formula_r), data = d, family = fam)
    mu <- fitted(m)
    y <- model.response(model.frame(m))
    deviance_out[[ref$case]] <- list(
      reference = paste0("glmmTMB ", packageVersion("glmmTMB"), ": sum(", ref$family, "()$dev.resids(y, fitted(m), 1))"),
      deviance = sum(fam$dev.resids(y, mu, rep(1, length(y)))),
      minus2loglik = -2 * as.numeric(logLik(m)))
    next
  }
  fit <- function(control) glmer(as.formula(ref$formula_r), data = d, family = fam, nAGQ = ref$nAGQ, weights = .w,
                                 control = control)
  m <- fit(glmerControl())
  tight <- fit(glmerControl(tolPwrss = 1e-12))
  deviance_out[[ref$case]] <- list(
    reference = paste0("lme4 ", packageVersion("lme4"), " deviance(); tight: glmerControl(tolPwrss = 1e-12)"),
    deviance = deviance(m), deviance_tight = deviance(tight),
    loglik = as.numeric(logLik(m)), loglik_tight = as.numeric(logLik(tight)),
    deviance_residuals_squared = sum(residuals(m, type = "deviance")^2))
}
writeLines(toJSON(deviance_out, auto_unbox = TRUE, digits = NA, pretty = TRUE), file.path(out_dir, "deviance.json"))

# predict(newdata) with new, missing and numeric grouping values
ss <- read.csv("data/sleepstudy.csv")
ss$Subject <- as.numeric(ss$Subject)  # a numeric grouping column; lme4 makes it a factor
fm <- lmer(Reaction ~ Days + (Days | Subject), ss)
nd_ss <- data.frame(Days = c(2, 2, 2, 2, NA), Subject = c(308, 309, NA, 999, 308))
cb <- read.csv("data/cbpp.csv")
cb$herd <- factor(cb$herd); cb$period <- factor(cb$period)
gm <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cb, family = binomial)
nd_cb <- data.frame(period = factor(c("1", "3", "3", "2"), levels = levels(cb$period)), herd = c("1", "1", NA, "99"))
new_fixed_level <- tryCatch(predict(gm, newdata = data.frame(period = "5", herd = "1")),
                            error = function(e) conditionMessage(e))
predict_out <- list(
  reference = paste0("lme4 ", packageVersion("lme4"), ", ", R.version.string),
  sleepstudy_numeric_subject = list(
    formula = "Reaction ~ Days + (Days | Subject)", method = "REML",
    newdata = nd_ss, conditional = predict(fm, newdata = nd_ss, allow.new.levels = TRUE),
    marginal = predict(fm, newdata = nd_ss, re.form = NA)),
  cbpp_laplace = list(
    formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)",
    newdata = nd_cb, link = predict(gm, newdata = nd_cb, allow.new.levels = TRUE),
    response = predict(gm, newdata = nd_cb, allow.new.levels = TRUE, type = "response"),
    new_fixed_level_message = new_fixed_level))
writeLines(toJSON(predict_out, auto_unbox = TRUE, digits = NA, pretty = TRUE, na = "null"),
           file.path(out_dir, "predict.json"))
