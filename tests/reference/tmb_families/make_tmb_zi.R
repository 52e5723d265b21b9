# Reference fits for glmmTMB's zero-inflated models (ziformula) and non-default conditional links,
# Laplace ML with the dispersion estimated jointly. Run from this folder: Rscript make_tmb_zi.R
# R 4.2.2, glmmTMB 1.1.5 (Debian r-cran-glmmtmb), jsonlite. Same JSON layout as make_tmb_families.R,
# plus the zero-inflation part (zi_*), predictions and residuals for the first 20 rows, the
# optimizer's convergence code and pdHess, and (zi cases) the log-likelihood of a tight refit.
suppressPackageStartupMessages({library(glmmTMB); library(jsonlite)})

NHEAD <- 20
TIGHT <- glmmTMBControl(optCtrl = list(iter.max = 1e4, eval.max = 1e4, rel.tol = 1e-14))

# Write data/<datafile>; if the file already exists it must come out identical (it is never changed).
write_data <- function(data, datafile) {
  path <- file.path("data", datafile)
  tmp <- tempfile(fileext = ".csv")
  write.csv(data, tmp, row.names = FALSE)
  if (file.exists(path)) {
    if (!identical(readLines(path), readLines(tmp))) stop(path, " exists with different content")
  } else {
    file.copy(tmp, path)
  }
  unlink(tmp)
}

fit_glmmTMB <- function(...) {
  warns <- character(0)
  m <- withCallingHandlers(glmmTMB(...), warning = function(w) {
    warns <<- c(warns, conditionMessage(w))
    invokeRestart("muffleWarning")
  })
  list(m = m, warnings = warns)
}

deparse1l <- function(f) paste(deparse(f, width.cutoff = 500L), collapse = " ")

save_case <- function(name, formula, formula_py, data, datafile, notes, family = nbinom2,
                      ziformula = ~0, ziformula_py = NULL, write = TRUE) {
  if (write) write_data(data, datafile)
  fam <- if (is.function(family)) family() else family
  t0 <- proc.time()[["elapsed"]]
  fit <- fit_glmmTMB(formula, data = data, family = fam, ziformula = ziformula)
  elapsed <- proc.time()[["elapsed"]] - t0
  m <- fit$m
  has_zi <- !identical(ziformula, ~0)
  for (w in fit$warnings) message(name, ": warning: ", w)
  vc <- VarCorr(m)$cond
  varcorr <- do.call(rbind, lapply(names(vc), function(g) {
    data.frame(grp = g, var1 = colnames(vc[[g]])[1], vcov = vc[[g]][1, 1], sdcor = sqrt(vc[[g]][1, 1]))
  }))
  re <- ranef(m, condVar = TRUE)$cond
  rl <- lapply(names(re), function(g) list(levels = rownames(re[[g]]), values = re[[g]][, 1],
                                           condsd = sqrt(attr(re[[g]], "condVar")[1, 1, ])))
  names(rl) <- names(re)
  head20 <- function(v) unname(as.numeric(v)[seq_len(min(NHEAD, length(v)))])
  loglik_tight <- NULL; tight_warnings <- character(0)
  if (has_zi) {
    tight <- fit_glmmTMB(formula, data = data, family = fam, ziformula = ziformula, control = TIGHT)
    for (w in tight$warnings) message(name, " (tight): warning: ", w)
    loglik_tight <- as.numeric(logLik(tight$m))
    tight_warnings <- tight$warnings  # nlminb cannot reach rel.tol 1e-14 and says so; the value is what counts
  }
  mfam <- m$modelInfo$family
  out <- list(case = name, reference = paste0("glmmTMB ", packageVersion("glmmTMB"), ", ", R.version.string),
              data = file.path("data", datafile), formula_r = deparse1l(formula), formula_py = formula_py,
              ziformula_r = if (has_zi) deparse1l(ziformula) else NULL,
              ziformula_py = if (has_zi) ziformula_py else NULL,
              family = mfam$family, link = mfam$link, method = "Laplace", nAGQ = 1, nobs = nobs(m),
              fixef_names = names(fixef(m)$cond), fixef = unname(fixef(m)$cond),
              fixef_se = unname(sqrt(diag(vcov(m)$cond))), vcov = unname(as.matrix(vcov(m)$cond)),
              zi_names = I(if (has_zi) names(fixef(m)$zi) else character(0)),
              zi_fixef = I(if (has_zi) unname(fixef(m)$zi) else numeric(0)),
              zi_se = I(if (has_zi) unname(sqrt(diag(vcov(m)$zi))) else numeric(0)),
              zi_vcov = if (has_zi) unname(as.matrix(vcov(m)$zi)) else list(),
              varcorr = varcorr, sigma_glmmTMB = sigma(m), loglik = as.numeric(logLik(m)),
              df = attr(logLik(m), "df"), aic = AIC(m), bic = BIC(m), ranef = rl,
              predict_response = head20(predict(m, type = "response")),
              predict_conditional = head20(predict(m, type = "conditional")),
              predict_zprob = if (has_zi) head20(predict(m, type = "zprob")) else NULL,
              predict_link = head20(predict(m, type = "link")),
              resid_pearson = head20(residuals(m, type = "pearson")),
              resid_response = head20(residuals(m, type = "response")),
              convergence = m$fit$convergence, pdHess = m$sdr$pdHess,
              loglik_tight = loglik_tight, tight_warnings = I(tight_warnings), glmmTMB_warnings = I(fit$warnings),
              factor_levels = lapply(Filter(is.factor, data), levels),
              seconds_glmmTMB = elapsed, notes = notes)
  ok <- m$fit$convergence == 0 && isTRUE(m$sdr$pdHess) && length(fit$warnings) == 0
  cat(sprintf("%-24s logLik %.6f  df %d  convergence %d  pdHess %s%s\n", name, out$loglik, out$df,
              out$convergence, out$pdHess,
              if (is.null(loglik_tight)) "" else sprintf("  tight %.6f", loglik_tight)))
  if (!ok) {
    message(name, ": NOT converged cleanly - no JSON written")
    return(invisible(FALSE))
  }
  writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"), paste0(name, ".json"))
  invisible(TRUE)
}

# --- Salamanders (glmmTMB's data), as in make_tmb_families.R -----------------------------------
data(Salamanders, package = "glmmTMB")
sal <- Salamanders[, c("site", "mined", "spp", "count")]
sal$site <- as.character(sal$site)  # spp and mined stay factors: their R level order is saved
sal_f <- count ~ spp + mined + (1 | site)
sal_py <- "count ~ spp + mined + (1|site)"
sal_note <- "glmmTMB's Salamanders data (site, mined, spp, count); spp and mined as factors with R's level order"

save_case("salamanders_poisson", sal_f, sal_py, sal, "salamanders.csv",
          paste0(sal_note, "; Poisson, no zero-inflation"), family = poisson)
save_case("salamanders_zip", sal_f, sal_py, sal, "salamanders.csv",
          paste0(sal_note, "; zero-inflated Poisson, zi ~ spp + mined"), family = poisson,
          ziformula = ~spp + mined, ziformula_py = "~ spp + mined")
save_case("salamanders_zinb2", sal_f, sal_py, sal, "salamanders.csv",
          paste0(sal_note, "; zero-inflated nbinom2 (variance mu (1 + mu/theta)), zi ~ spp + mined"),
          family = nbinom2, ziformula = ~spp + mined, ziformula_py = "~ spp + mined")
save_case("salamanders_zinb1", sal_f, sal_py, sal, "salamanders.csv",
          paste0(sal_note, "; zero-inflated nbinom1 (variance mu (1 + phi)), zi ~ spp + mined. ",
                 "The zi coefficients sppPR, sppDF and minedno run off towards -Inf (estimates near -20, ",
                 "SEs in the thousands): zero-inflation probability ~0 for those cells; compare them loosely"),
          family = nbinom1, ziformula = ~spp + mined, ziformula_py = "~ spp + mined")
save_case("salamanders_zinb2_zi1", sal_f, sal_py, sal, "salamanders.csv",
          paste0(sal_note, "; zero-inflated nbinom2 with a constant zero-inflation probability, zi ~ 1. ",
                 "The zi intercept goes to the boundary (about -16, SE about 4e3, zprob ~ 7e-8): the fit is ",
                 "salamanders_nb2 again (same log-likelihood to 1e-7); compare the zi intercept loosely"),
          family = nbinom2, ziformula = ~1, ziformula_py = "~ 1")

# --- simulated zero-inflated data -------------------------------------------------------------
set.seed(20261128)
g <- rep(sprintf("g%02d", 1:50), times = sample(10:30, 50, replace = TRUE))
n <- length(g)
x <- round(rnorm(n), 4)
z <- round(rnorm(n), 4)
u <- rnorm(50, 0, 0.5)[as.integer(factor(g))]
mu <- exp(0.7 + 0.5 * x + u)
p0 <- plogis(-1 + 0.8 * z)
r0 <- runif(n)
y <- ifelse(r0 < p0, 0, rnbinom(n, size = 2, mu = mu))
zinb <- data.frame(g = g, x = x, z = z, y = y)
save_case("simulated_zinb2", y ~ x + (1 | g), "y ~ x + (1|g)", zinb, "simulated_zinb2.csv",
          paste0("simulated: 50 groups of 10-30 rows; log mean 0.7 + 0.5 x + u, sd_u = 0.5, size theta = 2; ",
                 "structural zero with probability plogis(-1 + 0.8 z)"),
          family = nbinom2, ziformula = ~z, ziformula_py = "~ z")

# same groups, x, z and u (the random stream continues): exposure t, Poisson counts with mean mu t
t <- round(runif(n, 0.5, 2), 3)
r1 <- runif(n)
y1 <- ifelse(r1 < p0, 0, rpois(n, mu * t))
zip <- data.frame(g = g, x = x, z = z, t = t, y = y1)
save_case("simulated_zip_offset", y ~ x + offset(log(t)) + (1 | g), "y ~ x + offset(np.log(t)) + (1|g)",
          zip, "simulated_zip_offset.csv",
          paste0("simulated: the simulated_zinb2 groups, x, z and u; exposure t ~ U(0.5, 2) (3 decimals) as offset ",
                 "log(t); Poisson mean mu t with log mu = 0.7 + 0.5 x + u; structural zero with probability ",
                 "plogis(-1 + 0.8 z)"),
          family = poisson, ziformula = ~z, ziformula_py = "~ z")

# --- non-default conditional links (no zero-inflation) ----------------------------------------
save_case("salamanders_nb1_sqrt", sal_f, sal_py, sal, "salamanders.csv",
          paste0(sal_note, "; nbinom1 with sqrt link"), family = nbinom1(link = "sqrt"))
save_case("salamanders_nb2_sqrt", sal_f, sal_py, sal, "salamanders.csv",
          paste0(sal_note, "; nbinom2 with sqrt link"), family = nbinom2(link = "sqrt"))
bet <- read.csv(file.path("data", "simulated_beta.csv"), stringsAsFactors = FALSE)
save_case("simulated_beta_probit", y ~ x + (1 | g), "y ~ x + (1|g)", bet, "simulated_beta.csv",
          paste0("make_tmb_families.R's simulated_beta data (simulated with a logit mean), fitted with ",
                 "beta_family(link = \"probit\"). glmmTMB 1.1.5's Pearson residuals for beta divide by ",
                 "sqrt(mu (1 - mu)), without the 1/(1 + phi) of the beta variance"),
          family = beta_family(link = "probit"), write = FALSE)
