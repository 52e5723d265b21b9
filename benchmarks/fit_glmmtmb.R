# Fit one benchmark case with glmmTMB and print a JSON line (time from data.frame to fitted model
# with its standard errors: vcov() is inside the timed region). Same command line as fit_lme4.R:
#   Rscript fit_glmmtmb.R CASE DATADIR FORMULA FAMILY NAGQ [FACTORS [TASK [METHOD [ZIFORMULA [DISPFORMULA]]]]]
# ZIFORMULA ("~0": none) and DISPFORMULA ("~1" by default; "~ x", or "~0": no residual variance for
# a Gaussian model) are glmmTMB's ziformula and dispformula.
# Gaussian models are fitted by REML (as lmer's default) unless METHOD is "ML"; other families by
# Laplace (glmmTMB has no adaptive quadrature: NAGQ > 1 is an error). TASK "profile": glmmTMB cannot
# profile REML fits, so it fits ML, then confint(method = "profile"); its intervals for log-SDs and
# the correlation parameter of a 2x2 term are mapped onto SDs and correlations with lme4's names.
suppressPackageStartupMessages({ library(glmmTMB); library(data.table) })
a <- commandArgs(trailingOnly = TRUE)
name <- a[1]; datadir <- a[2]; form <- as.formula(a[3]); fam <- a[4]; nagq <- as.integer(a[5])
facs <- if (length(a) >= 6 && a[6] != "-") strsplit(a[6], ",")[[1]] else c("g", "s", "d", "dept")
task <- if (length(a) >= 7) a[7] else "fit"
reml <- !(length(a) >= 8 && a[8] == "ML") && fam == "gaussian" && task != "profile"
zif <- if (length(a) >= 9) as.formula(a[9]) else ~0
dispf <- if (length(a) >= 10) as.formula(a[10]) else ~1
if (nagq > 1) stop("glmmTMB has no adaptive Gauss-Hermite quadrature (nAGQ > 1)")
d <- as.data.frame(fread(file.path(datadir, paste0(name, ".csv"))))
for (v in intersect(facs, names(d))) d[[v]] <- factor(d[[v]])
# one tiny fit of each kind before the clock starts (first-call costs), as worker.py does
w <- data.frame(y = rnorm(60), x1 = rnorm(60), g = factor(rep(1:6, each = 10)))
invisible(suppressWarnings(glmmTMB(y ~ x1 + (1 | g), w, REML = TRUE)))
invisible(suppressWarnings(glmmTMB(I(y > 0) ~ x1 + (1 | g), w, family = binomial())))

# glmmTMB's profile intervals are on its internal scale: theta_<term>.<i> is log(SD) for the first
# k, then the correlation parameters; for k = 2, cor = x / sqrt(1 + x^2). Rename as lme4 does.
ci_lme4_names <- function(m, ci) {
  nm <- rownames(ci); out <- ci
  re <- m$modelInfo$reTrms$cond
  th <- which(startsWith(nm, "theta_"))  # in the order of the terms, k (k + 1) / 2 per term
  pos <- 0
  for (j in seq_along(re$cnms)) {
    term <- names(re$cnms)[j]; cn <- re$cnms[[j]]; k <- length(cn); rows <- th[pos + seq_len(k * (k + 1) / 2)]
    pos <- pos + k * (k + 1) / 2
    if (k > 2 || anyNA(rows)) next
    for (i in seq_len(k)) { out[rows[i], ] <- exp(ci[rows[i], ]); nm[rows[i]] <- sprintf("sd_%s|%s", cn[i], term) }
    if (k == 2) {
      r <- rows[3]; out[r, ] <- ci[r, ] / sqrt(1 + ci[r, ]^2); nm[r] <- sprintf("cor_%s.%s|%s", cn[2], cn[1], term)
    }
  }
  rownames(out) <- nm
  out
}

t0 <- proc.time()[["elapsed"]]
ci_json <- ""
out <- tryCatch({
  family <- if (fam == "beta") beta_family() else if (fam != "gaussian") get(fam)()
  m <- if (fam == "gaussian") glmmTMB(form, d, REML = reml, dispformula = dispf) else
    glmmTMB(form, d, family = family, ziformula = zif, dispformula = dispf)
  se <- sqrt(diag(as.matrix(vcov(m)$cond)))
  if (task == "profile") {
    ci <- ci_lme4_names(m, confint(m, method = "profile")[, 1:2, drop = FALSE])
    ci_json <- paste0(', "ci": {', paste(sprintf('"%s": [%.10g, %.10g]', rownames(ci), ci[, 1], ci[, 2]),
                                         collapse = ", "), "}")
  }
  NULL
}, error = function(e) conditionMessage(e))
secs <- proc.time()[["elapsed"]] - t0
if (!is.null(out)) {
  msg <- gsub('["\\\n]', " ", substr(out, 1, 200))
  cat(sprintf('{"tool": "glmmTMB", "case": "%s", "seconds": %.6f, "llf": NaN, "error": "%s"}\n', name, secs, msg))
  quit(status = 0)
}
ll <- as.numeric(logLik(m))
# logLik() is NA when the Hessian is not positive definite: then report the attained objective
# (the same log-likelihood at the optimum nlminb stopped at) and say so
ll_json <- ""
if (is.na(ll)) { ll <- -m$fit$objective; ll_json <- ', "llf_from_objective": true' }
conv <- m$fit$convergence
crit <- if (fam == "gaussian") (if (reml) "REML" else "ML") else "Laplace"
pd <- if (isTRUE(m$sdr$pdHess)) "true" else "false"
cat(sprintf('{"tool": "glmmTMB", "case": "%s", "seconds": %.6f, "llf": %.10f, "crit": "%s", "convergence": %d, "pdHess": %s%s%s}\n',
            name, secs, ll, crit, conv, pd, ll_json, ci_json))
