# lme4's grouseticks (403 rows) for benchmarks/pyports.py, written to grouseticks.csv beside this file.
# Made with R 4.2.2 Patched (2022-11-10 r83330), lme4 1.1.31:
#   Rscript benchmarks/data/grouseticks.R
# sHEIGHT is scale(HEIGHT) (centred, divided by the n-1 standard deviation), for tools without scale().
suppressMessages(library(lme4))
out <- file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))), "grouseticks.csv")
d <- grouseticks[, c("INDEX", "TICKS", "BROOD", "HEIGHT", "YEAR", "LOCATION")]
d$sHEIGHT <- as.numeric(scale(d$HEIGHT))
write.csv(d, out, row.names = FALSE)
cat("wrote", out, nrow(d), "rows;", R.version.string, "lme4", format(packageVersion("lme4")), "\n")
