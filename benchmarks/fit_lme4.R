# Fit one benchmark case with lme4 and print a JSON line (time from data.frame to fitted model
# with its standard errors). Usage: Rscript fit_lme4.R CASE DATADIR FORMULA FAMILY NAGQ
suppressPackageStartupMessages({ library(lme4); library(data.table) })
a <- commandArgs(trailingOnly = TRUE)
name <- a[1]; datadir <- a[2]; form <- as.formula(a[3]); fam <- a[4]; nagq <- as.integer(a[5])
d <- as.data.frame(fread(file.path(datadir, paste0(name, ".csv"))))
for (v in intersect(c("g", "s", "d", "dept"), names(d))) d[[v]] <- factor(d[[v]])
# one tiny fit before the clock starts (first-call costs), as worker.py does for Python
w <- data.frame(y = rnorm(60), x1 = rnorm(60), g = factor(rep(1:6, each = 10)))
invisible(suppressMessages(lmer(y ~ x1 + (1 | g), w)))
invisible(suppressMessages(glmer(I(y > 0) ~ x1 + (1 | g), w, family = binomial())))
t0 <- proc.time()[["elapsed"]]
m <- if (fam == "gaussian") lmer(form, d, REML = TRUE) else
  glmer(form, d, family = get(fam)(), nAGQ = nagq)
se <- sqrt(diag(as.matrix(vcov(m))))
secs <- proc.time()[["elapsed"]] - t0
ll <- as.numeric(logLik(m))
if (fam == "binomial" && nagq > 1) {
  y <- m@resp$y; w <- m@resp$weights
  ll <- ll + sum(dbinom(round(y * w), round(w), y, log = TRUE))  # onto the Laplace scale (lme4 issue 161)
}
cat(sprintf('{"tool": "lme4", "case": "%s", "seconds": %.6f, "llf": %.10f}\n', name, secs, ll))
