# Shared by make_covstruct.R and heldout/make_heldout.R: packages, versions, glmmTMB 1.1.5's
# parameter scales, and the helpers that fit a case and write it as JSON (write_case writes into
# the working directory: each script runs from its own folder).
suppressPackageStartupMessages({
  library(glmmTMB); library(lme4); library(nlme); library(jsonlite)
})
fixef <- glmmTMB::fixef; ranef <- glmmTMB::ranef; VarCorr <- glmmTMB::VarCorr  # (nlme's generics)

t_start <- proc.time()[["elapsed"]]
pkg_versions <- list(R = R.version.string, glmmTMB = as.character(packageVersion("glmmTMB")),
                     TMB = as.character(packageVersion("TMB")), lme4 = as.character(packageVersion("lme4")),
                     nlme = as.character(packageVersion("nlme")), Matrix = as.character(packageVersion("Matrix")),
                     jsonlite = as.character(packageVersion("jsonlite")))

# ------------------------------------------------------------------------------------------------
# glmmTMB 1.1.5's internal parameter scales (glmmTMB.cpp, checked numerically for every fit below:
# `theta_check` holds the largest difference between these maps and VarCorr()).
PARAM_SCALES <- list(
  theta = paste("theta is stored per random-effects term in formula order; within a term the first",
                "values are log standard deviations, then the correlation parameters."),
  diag = "theta = log(sd_1..sd_n); no correlation parameters.",
  us = paste("theta = (log sd_1..sd_n, c_1..c_{n(n-1)/2}); correlations = glmmTMB:::get_cor(c):",
             "put c column-wise in the strict upper triangle of a unit upper-triangular L, R = L'L, then",
             "scale R to unit diagonal (TMB density::UNSTRUCTURED_CORR)."),
  cs = paste("theta = (log sd_1..sd_n, t): heterogeneous variances, one common correlation",
             "rho = plogis(t) * (1 + a) - a with a = 1/(n - 1), so rho in (-1/(n-1), 1)."),
  ar1 = paste("theta = (log sd, t): ONE common sd (homogeneous), rho = t / sqrt(1 + t^2) in (-1, 1);",
              "cor(i, j) = rho^|i - j| (column index, the times are not used: equally spaced assumed)."),
  toep = paste("theta = (log sd_1..sd_n, t_1..t_{n-1}): heterogeneous variances, lag-k correlation",
               "rho_k = t_k / sqrt(1 + t_k^2); cor(i, j) = rho_|i-j| (no positive-definiteness constraint",
               "beyond the transform)."),
  betad_gaussian = paste("Gaussian dispersion: betad (= fixef(m)$disp) is on the log(sigma^2) scale, the",
                         "log residual VARIANCE; sigma(m) = exp(0.5 * betad) (glmmTMB:::sigma.glmmTMB; the",
                         "C++ uses dnorm(y, mu, sqrt(exp(eta_disp)))). sigma(m) is NA when the",
                         "dispersion model has more than one coefficient."),
  betad_nbinom2 = "nbinom2: exp(betad) is the size theta, Var = mu + mu^2 / theta.",
  betad_beta = "beta_family: exp(betad) is the precision phi, Var = mu (1 - mu) / (1 + phi).",
  dispformula_zero = paste("dispformula = ~0 (Gaussian only): betad is mapped (fixed) at",
                           "glmmTMBControl()$zerodisp_val = log(sqrt(.Machine$double.eps)) = -18.0218, i.e.",
                           "residual variance 1.49e-8 (sigma = 1.22e-4), not exactly 0."))

cs_rho <- function(t, n) { a <- 1 / (n - 1); plogis(t) * (1 + a) - a }
tanh_like <- function(t) t / sqrt(1 + t^2)

# Structure parameters from theta (our reading of the C++), per term.
theta_map <- function(code, th, n) {
  switch(code,
    diag = list(sd = exp(th), cor = diag(n)),
    us = { C <- diag(n); C[lower.tri(C)] <- glmmTMB:::get_cor(th[-(1:n)]); C[upper.tri(C)] <- t(C)[upper.tri(C)]
           list(sd = exp(th[1:n]), cor = C) },
    cs = { r <- cs_rho(th[n + 1], n); C <- matrix(r, n, n); diag(C) <- 1; list(sd = exp(th[1:n]), cor = C) },
    ar1 = { r <- tanh_like(th[2]); list(sd = rep(exp(th[1]), n), cor = r^abs(outer(1:n, 1:n, "-"))) },
    toep = { r <- c(1, tanh_like(th[(n + 1):(2 * n - 1)])); list(sd = exp(th[1:n]), cor = matrix(r[abs(outer(1:n, 1:n, "-")) + 1], n, n)) },
    NULL)
}

# Run an expression, collecting its warnings instead of printing them.
with_warnings <- function(expr) {
  w <- character(0)
  val <- withCallingHandlers(expr, warning = function(cond) {
    w <<- c(w, conditionMessage(cond)); invokeRestart("muffleWarning") })
  list(value = val, warnings = unique(w))
}

mat_json <- function(M) list(rownames = I(rownames(M)), colnames = I(colnames(M)), values = unname(as.matrix(M)))

# For Gaussian fits: the exact marginal (or REML) log-likelihood rebuilt from the reported
# parameters (V = Z G Z' + diag(exp(Xd betad))) and the GLS standard errors of the fixed effects,
# (X' V^-1 X)^-1 at the estimates. glmmTMB's own SEs come from the inverse Hessian of the Laplace
# objective in ALL parameters (beta, betad, theta), so they include the beta-variance-parameter
# cross terms of the observed information; lme4 and nlme report the GLS ones.
gaussian_check <- function(m, REML) {
  if (family(m)$family != "gaussian") return(NULL)
  pl <- glmmTMB:::getParList(m)
  X <- as.matrix(getME(m, "X")); Z <- getME(m, "Z"); Xd <- as.matrix(getME(m, "Xd"))
  vc <- VarCorr(m)$cond; reS <- m$modelInfo$reStruc$condReStruc
  G <- Matrix::bdiag(lapply(seq_along(reS), function(k)
    kronecker(Matrix::Diagonal(as.integer(reS[[k]]$blockReps)), Matrix::Matrix(unclass(vc[[k]])[, , drop = FALSE]))))
  V <- as.matrix(Z %*% G %*% Matrix::t(Z)) + diag(as.vector(exp(Xd %*% pl$betad)))
  y <- m$obj$env$data$yobs
  U <- chol(V)
  r <- backsolve(U, y - X %*% pl$beta, transpose = TRUE)
  W <- backsolve(U, X, transpose = TRUE)
  XtViX <- crossprod(W)
  ll <- -0.5 * (length(y) * log(2 * pi) + 2 * sum(log(diag(U))) + sum(r^2))
  if (REML) ll <- ll + 0.5 * ncol(X) * log(2 * pi) - 0.5 * as.numeric(determinant(XtViX)$modulus)
  list(loglik_rebuilt = ll, loglik_rebuilt_minus_objective = ll + m$fit$objective,
       fixef_se_gls = I(unname(sqrt(diag(solve(XtViX))))))
}

tmb_fit <- function(formula, data, family = gaussian(), dispformula = ~1, REML = FALSE) {
  t0 <- proc.time()[["elapsed"]]
  fw <- with_warnings(glmmTMB(formula, data = data, family = family, dispformula = dispformula, REML = REML))
  m <- fw$value
  rec <- with_warnings(tmb_record(m, formula, dispformula, REML))
  out <- rec$value
  out$gaussian_check <- with_warnings(gaussian_check(m, REML))$value
  out$warnings <- I(unique(c(fw$warnings, rec$warnings)))
  out$seconds <- proc.time()[["elapsed"]] - t0
  list(model = m, record = out)
}

tmb_record <- function(m, formula, dispformula, REML) {
  fam <- family(m)
  fe <- fixef(m); V <- vcov(m)
  pl <- glmmTMB:::getParList(m)           # full parameter list, mapped parameters included
  ll <- logLik(m)
  vc <- VarCorr(m)$cond
  reS <- m$modelInfo$reStruc$condReStruc
  re <- ranef(m)$cond
  nth <- vapply(reS, function(s) as.integer(s$blockNumTheta), 1L)
  th_all <- pl$theta
  th_end <- cumsum(nth); th_start <- th_end - nth + 1
  terms <- lapply(seq_along(reS), function(k) {
    s <- reS[[k]]; code <- names(s$blockCode); n <- as.integer(s$blockSize)
    M <- vc[[k]]; sds <- attr(M, "stddev"); C <- attr(M, "correlation")
    if (identical(dim(C), c(0L, 0L)) || is.null(dim(C))) C <- diag(length(sds))
    dimnames(C) <- dimnames(M)
    th <- th_all[th_start[k]:th_end[k]]
    mp <- theta_map(code, th, n)
    chk <- if (is.null(mp)) NA else max(abs(mp$sd - sds), abs(mp$cor - C))
    par <- switch(code,
      ar1 = list(sd = unname(sds[1]), rho = C[1, 2], rho_from_theta = tanh_like(th[2])),
      cs = list(sd = I(unname(sds)), rho = C[1, 2], rho_from_theta = cs_rho(th[n + 1], n)),
      toep = list(sd = I(unname(sds)), rho_lag = I(unname(C[1, -1])),
                  rho_lag_from_theta = I(tanh_like(th[(n + 1):(2 * n - 1)]))),
      us = list(sd = I(unname(sds)), cor = unname(C)),
      diag = list(sd = I(unname(sds))))
    # ranef() merges the terms of one grouping factor into one data frame: pick this term's columns
    grp <- trimws(sub(".*\\|", "", names(reS)[k]))
    r <- re[[grp]][, colnames(M), drop = FALSE]; keep <- seq_len(min(5, nrow(r)))
    list(term = names(reS)[k], group = grp, varcorr_name = names(vc)[k], structure = code,
         block_size = n, n_levels = as.integer(s$blockReps),
         covariance = mat_json(M), stddev = I(unname(sds)), stddev_names = I(names(sds)),
         correlation = unname(C),
         theta = I(unname(th)), structure_params = par, theta_check = chk,
         ranef = list(levels = I(rownames(r)[keep]), columns = I(colnames(r)),
                      values = unname(as.matrix(r[keep, , drop = FALSE])), n_levels = nrow(r)))
  })
  has_disp <- !identical(deparse(dispformula), "~1")
  dispres <- NULL
  if (has_disp) {
    dfe <- fe$disp
    dse <- tryCatch(sqrt(diag(as.matrix(V$disp))), error = function(e) rep(NA_real_, length(dfe)))
    if (length(dse) != length(dfe)) dse <- rep(NA_real_, length(dfe))
    dispres <- list(names = I(names(dfe)), fixef = I(unname(dfe)), se = I(unname(dse)),
                    betad_internal = I(unname(pl$betad)))
  }
  pdH <- m$sdr$pdHess
  Filter(Negate(is.null), list(engine = "glmmTMB",
       call = list(formula = deparse1(formula), dispformula = deparse1(dispformula), ziformula = "~0",
                   family = fam$family, link = fam$link, REML = REML),
       nobs = nobs(m),
       loglik = as.numeric(ll), loglik_objective = -m$fit$objective, df = attr(ll, "df"), aic = AIC(m), bic = BIC(m),
       fixef_names = I(names(fe$cond)), fixef = I(unname(fe$cond)),
       fixef_se = I(unname(sqrt(diag(as.matrix(V$cond))))), vcov = unname(as.matrix(V$cond)),
       disp = dispres, betad = I(unname(pl$betad)),
       sigma = sigma(m),
       re_terms = terms,
       theta = I(unname(th_all)),
       convergence = m$fit$convergence, message = m$fit$message, iterations = m$fit$iterations,
       objective = m$fit$objective, pdHess = pdH,
       predict_response = I(unname(predict(m, type = "response")[1:10]))))
}

factor_levels <- function(df) lapply(Filter(is.factor, df), levels)

write_case <- function(name, description, datafile, data, fits, notes = list(), extra = list()) {
  out <- c(list(case = name, description = description, versions = pkg_versions,
                data = list(file = datafile, nobs = nrow(data), columns = I(names(data)),
                            factor_levels = factor_levels(data)),
                fits = fits, notes = c(notes, list(parameter_scales = PARAM_SCALES))), extra)
  write_json(out, paste0(name, ".json"), digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null")
  cat(sprintf("%-32s written (%.1fs so far)\n", paste0(name, ".json"), proc.time()[["elapsed"]] - t_start))
}

write_data <- function(df, file) { write.csv(df, file, row.names = FALSE); file }
