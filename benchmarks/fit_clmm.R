# Fit one benchmark case with ordinal::clmm and print a JSON line (time from data.frame to the
# fitted model with its standard errors: clmm computes its Hessian inside the call, vcov() reads it).
#   Rscript fit_clmm.R CASE DATADIR FORMULA LINK NAGQ FACTORS
# The response (the formula's left side) is made an ordered factor of its sorted values.
suppressPackageStartupMessages({ library(ordinal); library(data.table) })
a <- commandArgs(trailingOnly = TRUE)
name <- a[1]; datadir <- a[2]; form <- as.formula(a[3]); link <- a[4]; nagq <- as.integer(a[5])
facs <- strsplit(a[6], ",")[[1]]
d <- as.data.frame(fread(file.path(datadir, paste0(name, ".csv"))))
for (v in intersect(facs, names(d))) d[[v]] <- factor(d[[v]])
resp <- all.vars(form)[1]
d[[resp]] <- factor(d[[resp]], ordered = TRUE)
# one tiny fit before the clock starts (first-call costs), as worker.py does
w <- data.frame(y = factor(rep(1:3, 20), ordered = TRUE), x1 = rnorm(60), g = factor(rep(1:6, each = 10)))
invisible(suppressWarnings(clmm(y ~ x1 + (1 | g), w)))

t0 <- proc.time()[["elapsed"]]
out <- tryCatch({
  m <- clmm(form, data = d, link = link, nAGQ = nagq)
  se <- sqrt(diag(vcov(m)))
  NULL
}, error = function(e) conditionMessage(e))
secs <- proc.time()[["elapsed"]] - t0
if (!is.null(out)) {
  msg <- gsub('["\\\n]', " ", substr(out, 1, 200))
  cat(sprintf('{"tool": "clmm", "case": "%s", "seconds": %.6f, "llf": NaN, "error": "%s"}\n', name, secs, msg))
  quit(status = 0)
}
crit <- if (nagq > 1) sprintf("AGQ%d", nagq) else "Laplace"
cat(sprintf('{"tool": "clmm", "case": "%s", "seconds": %.6f, "llf": %.10f, "crit": "%s", "max_grad": %.3g}\n',
            name, secs, as.numeric(logLik(m)), crit, max(abs(m$gradient))))
