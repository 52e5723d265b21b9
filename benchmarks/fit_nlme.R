# Fit one benchmark case with nlme::lme and print a JSON line (time from data.frame to fitted model
# with its standard errors: vcov() is inside the timed region). Usage:
#   Rscript fit_nlme.R CASE DATADIR FIXED RANDOM CORRELATION WEIGHTS METHOD [FACTORS]
# FIXED is the fixed-effects formula ("y ~ x"); RANDOM, CORRELATION and WEIGHTS are R code for lme's
# random, correlation and weights arguments ("~ 1 | g", "list(g = pdDiag(~ x))",
# "corAR1(form = ~ 1 | g)", "varIdent(form = ~ 1 | arm)"), "-" for none; METHOD "ML" or "REML";
# FACTORS: comma-separated columns made factors, as in fit_lme4.R. logLik() of an ML fit is the
# marginal log-likelihood of the model (weights' Jacobian included), comparable with lme4's and
# glmmTMB's. The iteration limits are raised (200) so that a slow fit ends by converging.
suppressPackageStartupMessages({ library(nlme); library(data.table) })
a <- commandArgs(trailingOnly = TRUE)
name <- a[1]; datadir <- a[2]; fixed <- as.formula(a[3])
code <- function(s) if (s == "-") NULL else eval(parse(text = s))
random <- code(a[4]); corr <- code(a[5]); wts <- code(a[6])
method <- a[7]
facs <- if (length(a) >= 8 && a[8] != "-") strsplit(a[8], ",")[[1]] else c("g", "s", "d", "dept")
d <- as.data.frame(fread(file.path(datadir, paste0(name, ".csv"))))
for (v in intersect(facs, names(d))) d[[v]] <- factor(d[[v]])
ctrl <- lmeControl(maxIter = 200, msMaxIter = 200)
# one tiny fit before the clock starts (first-call costs), as the other scripts do
w <- data.frame(y = rnorm(60), x = rnorm(60), g = factor(rep(1:6, each = 10)))
invisible(lme(y ~ x, random = ~ 1 | g, data = w, method = "ML"))
t0 <- proc.time()[["elapsed"]]
out <- tryCatch({
  m <- lme(fixed, data = d, random = random, correlation = corr, weights = wts, method = method, control = ctrl)
  se <- sqrt(diag(as.matrix(vcov(m))))
  NULL
}, error = function(e) conditionMessage(e))
secs <- proc.time()[["elapsed"]] - t0
if (!is.null(out)) {
  msg <- gsub('["\\\n]', " ", substr(out, 1, 200))
  cat(sprintf('{"tool": "nlme", "case": "%s", "seconds": %.6f, "llf": NaN, "error": "%s"}\n', name, secs, msg))
  quit(status = 0)
}
ll <- as.numeric(logLik(m))
it <- if (is.null(m$numIter)) -1L else as.integer(m$numIter[1])
cat(sprintf('{"tool": "nlme", "case": "%s", "seconds": %.6f, "llf": %.10f, "crit": "%s", "iterations": %d}\n',
            name, secs, ll, method, it))
