# Fit one benchmark case with lme4 and print a JSON line (time from data.frame to fitted model
# with its standard errors). Usage:
#   Rscript fit_lme4.R CASE DATADIR FORMULA FAMILY NAGQ [FACTORS [TASK [METHOD]]]
# FACTORS: comma-separated grouping columns ("-": g,s,d,dept); TASK: "fit" or "profile" (fit, then
# confint(method = "profile"), timed together; the intervals go into the line as "ci");
# METHOD: "REML" (lmer's default) or "ML" for Gaussian models.
suppressPackageStartupMessages({ library(lme4); library(data.table) })
a <- commandArgs(trailingOnly = TRUE)
name <- a[1]; datadir <- a[2]; form <- as.formula(a[3]); fam <- a[4]; nagq <- as.integer(a[5])
facs <- if (length(a) >= 6 && a[6] != "-") strsplit(a[6], ",")[[1]] else c("g", "s", "d", "dept")
task <- if (length(a) >= 7) a[7] else "fit"
reml <- !(length(a) >= 8 && a[8] == "ML")
d <- as.data.frame(fread(file.path(datadir, paste0(name, ".csv"))))
for (v in intersect(facs, names(d))) d[[v]] <- factor(d[[v]])
# one tiny fit before the clock starts (first-call costs), as worker.py does for Python
w <- data.frame(y = rnorm(60), x1 = rnorm(60), g = factor(rep(1:6, each = 10)))
invisible(suppressMessages(lmer(y ~ x1 + (1 | g), w)))
invisible(suppressMessages(glmer(I(y > 0) ~ x1 + (1 | g), w, family = binomial())))
t0 <- proc.time()[["elapsed"]]
ci_json <- ""
out <- tryCatch({
  m <- if (fam == "gaussian") lmer(form, d, REML = reml) else
    glmer(form, d, family = get(fam)(), nAGQ = nagq)
  se <- sqrt(diag(as.matrix(vcov(m))))
  if (task == "profile") {
    ci <- suppressMessages(confint(m, method = "profile", oldNames = FALSE))
    ci_json <- paste0(', "ci": {', paste(sprintf('"%s": [%.10g, %.10g]', rownames(ci), ci[, 1], ci[, 2]),
                                         collapse = ", "), "}")
  }
  NULL
}, error = function(e) conditionMessage(e))
secs <- proc.time()[["elapsed"]] - t0
if (!is.null(out)) {
  msg <- gsub('["\\\n]', " ", substr(out, 1, 200))
  cat(sprintf('{"tool": "lme4", "case": "%s", "seconds": %.6f, "llf": NaN, "error": "%s"}\n', name, secs, msg))
  quit(status = 0)
}
ll <- as.numeric(logLik(m))
if (fam == "binomial" && nagq > 1) {
  y <- m@resp$y; w <- m@resp$weights
  ll <- ll + sum(dbinom(round(y * w), round(w), y, log = TRUE))  # onto the Laplace scale (lme4 issue 161)
}
crit <- if (fam == "gaussian") (if (reml) "REML" else "ML") else if (nagq > 1) paste0("AGQ", nagq) else "Laplace"
cat(sprintf('{"tool": "lme4", "case": "%s", "seconds": %.6f, "llf": %.10f, "crit": "%s"%s}\n',
            name, secs, ll, crit, ci_json))
