# Reference values for midas_glmm issue 24 (emmeans details, Satterthwaite for ML fits,
# glmmTMB Pearson residuals, zero prior weights).
# Usage (from this folder): Rscript make_issue24.R
# Writes the simulated / packaged data sets as CSV (factors as their labels) and one JSON per case.
# NA values (e.g. non-estimable EMMs) are written as JSON null; tables are written column-wise
# (one array per column, as in ../emmeans/).
suppressPackageStartupMessages({
  library(lme4); library(lmerTest); library(pbkrtest); library(emmeans)
  library(glmmTMB); library(jsonlite)
})

versions <- list(R = R.version.string)
for (p in c("lme4", "lmerTest", "pbkrtest", "emmeans", "glmmTMB", "TMB", "Matrix", "jsonlite"))
  versions[[p]] <- as.character(packageVersion(p))

# ---- helpers ---------------------------------------------------------------------------------
save_json <- function(x, file) {
  write_json(c(list(versions = versions), x), file, digits = NA, auto_unbox = TRUE,
             pretty = TRUE, na = "null")
  cat("wrote", file, "\n")
}
save_csv <- function(d, file) { write.csv(d, file, row.names = FALSE); cat("wrote", file, "\n") }
# a table (data frame / emmGrid summary) as a list of columns, factors as labels
tab <- function(x) {
  d <- as.data.frame(x)
  for (v in names(d)) if (is.factor(d[[v]])) d[[v]] <- as.character(d[[v]])
  as.list(d)
}
# evaluate expr, collecting its messages and warnings instead of letting them print
with_msgs <- function(expr) {
  msgs <- character(0); warns <- character(0)
  val <- withCallingHandlers(expr,
    message = function(m) { msgs <<- c(msgs, conditionMessage(m)); invokeRestart("muffleMessage") },
    warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") })
  list(value = val, messages = msgs, warnings = warns)
}
# what print(summary(x)) shows for an emmGrid, plus the summary's notes ("mesg" attribute)
# and any messages/warnings from building and printing it
emm_record <- function(expr) {
  built <- with_msgs(expr)
  summ <- with_msgs(summary(built$value))   # the tukey -> sidak note is a message from summary()
  s <- summ$value
  printed <- with_msgs(capture.output(print(s)))
  list(table = tab(s), printed = printed$value, notes = attr(s, "mesg"),
       messages = c(built$messages, summ$messages, printed$messages),
       warnings = c(built$warnings, summ$warnings, printed$warnings))
}
coef_table <- function(m) {  # summary(m)$coefficients with the term names as a column
  cf <- summary(m)$coefficients
  c(list(term = rownames(cf)), as.list(as.data.frame(cf, check.names = FALSE)))
}

# ---- (a) data: 40 groups of 6, factor f, unbalanced 0/1 numeric d, continuous x -----------
set.seed(2024)
n_g <- 40; n_per <- 6; n <- n_g * n_per
sim <- data.frame(g = factor(sprintf("g%02d", rep(seq_len(n_g), each = n_per))),
                  f = factor(sample(c("a", "b", "c"), n, replace = TRUE), levels = c("a", "b", "c")),
                  d = rbinom(n, 1, 0.3),
                  x = round(rnorm(n), 4))
u <- rnorm(n_g, sd = 0.7)
sim$y <- round(1 + c(a = 0, b = 0.5, c = -0.3)[as.character(sim$f)] + 0.8 * sim$d + 0.4 * sim$x +
               u[as.integer(sim$g)] + rnorm(n), 5)
save_csv(sim, "covkeep.csv")

m_a <- lmer(y ~ f + d + x + (1 | g), data = sim, REML = TRUE)  # lmerTest's lmer (a subclass)
rg <- ref_grid(m_a)
rg0 <- ref_grid(m_a, cov.keep = character(0))
save_json(list(
  data = "covkeep.csv", formula = "y ~ f + d + x + (1 | g)", REML = TRUE,
  notes = paste("d is a 0/1 numeric column. emmeans' default cov.keep = \"2\" keeps covariates with",
                "at most 2 distinct values at those values (like a factor), so emmeans(m, \"f\") averages",
                "over d = 0 and d = 1 with equal weight; cov.keep = character(0) puts d at its mean.",
                "cov.reduce = mean does NOT change d (it only acts on covariates not kept)."),
  d_mean = mean(sim$d), x_mean = mean(sim$x), n_d1 = sum(sim$d),
  fixef = as.list(fixef(m_a)), loglik_reml = as.numeric(logLik(m_a)),
  cov_keep_option = get_emm_option("cov.keep"),
  ref_grid_default = tab(rg@grid), ref_grid_cov_keep_none = tab(rg0@grid),
  emm_f = emm_record(emmeans(m_a, "f")),
  emm_d = emm_record(emmeans(m_a, "d")),
  emm_f_cov_keep_none = emm_record(emmeans(m_a, "f", cov.keep = character(0))),
  emm_f_cov_reduce_mean = emm_record(emmeans(m_a, "f", cov.reduce = mean)),
  emm_f_at_d_mean = emm_record(emmeans(m_a, "f", at = list(d = mean(sim$d))))
), "emm_covkeep.json")

# ---- (b) two factors with an empty cell a3:b3 ------------------------------------------------
set.seed(2025)
nb <- expand.grid(rep = 1:4, b = c("b1", "b2", "b3"), a = c("a1", "a2", "a3"), g = sprintf("g%02d", 1:12),
                  stringsAsFactors = FALSE)
nb <- nb[!(nb$a == "a3" & nb$b == "b3"), ]           # no rows in cell a3:b3
nb <- nb[sample(nrow(nb), 240), c("g", "a", "b")]    # unbalanced subsample
nb <- nb[order(nb$g, nb$a, nb$b), ]
nb$a <- factor(nb$a, levels = c("a1", "a2", "a3")); nb$b <- factor(nb$b, levels = c("b1", "b2", "b3"))
nb$g <- factor(nb$g)
cell <- outer(c(a1 = 0, a2 = 0.6, a3 = -0.4), c(b1 = 0, b2 = 0.5, b3 = 1.0), "+")
cell["a2", "b2"] <- cell["a2", "b2"] + 0.7          # an interaction
ug <- rnorm(nlevels(nb$g), sd = 0.6)
nb$y <- round(2 + cell[cbind(as.character(nb$a), as.character(nb$b))] + ug[as.integer(nb$g)] +
              rnorm(nrow(nb), sd = 0.8), 5)
rownames(nb) <- NULL
save_csv(nb, "nonest.csv")

m_b <- with_msgs(lmer(y ~ a * b + (1 | g), data = nb))
mb <- m_b$value
save_json(list(
  data = "nonest.csv", formula = "y ~ a * b + (1 | g)", REML = TRUE,
  cell_counts = tab(as.data.frame(table(a = nb$a, b = nb$b))),
  fit_messages = c(m_b$messages, m_b$warnings),
  fixef = as.list(fixef(mb)),                                  # a3:b3 column dropped
  col_dropped = as.list(attr(getME(mb, "X"), "col.dropped")),
  loglik_reml = as.numeric(logLik(mb)),
  emm_ab = emm_record(emmeans(mb, ~ a * b)),
  emm_a = emm_record(emmeans(mb, "a")),
  emm_b = emm_record(emmeans(mb, "b")),
  emm_b_by_a = emm_record(emmeans(mb, "b", by = "a")),
  pairs_b_by_a = emm_record(pairs(emmeans(mb, "b", by = "a"))),   # adjust: tukey (default)
  pairs_a = emm_record(pairs(emmeans(mb, "a")))
), "emm_nonest.json")

# ---- (c) Tukey asked for on a non-pairwise family: emmeans uses Sidak ----------------------
e_f <- emmeans(m_a, "f")
save_json(list(
  data = "covkeep.csv", formula = "y ~ f + d + x + (1 | g)", REML = TRUE,
  notes = "emmeans(m, \"f\") of the emm_covkeep model (Kenward-Roger df, d kept at 0 and 1).",
  emm_f = tab(e_f),
  trt_vs_ctrl_tukey = emm_record(contrast(e_f, method = "trt.vs.ctrl", adjust = "tukey")),
  trt_vs_ctrl_sidak = emm_record(contrast(e_f, method = "trt.vs.ctrl", adjust = "sidak")),
  trt_vs_ctrl_default = emm_record(contrast(e_f, method = "trt.vs.ctrl")),   # default: dunnettx
  poly_tukey = emm_record(contrast(e_f, method = "poly", adjust = "tukey")),
  poly_sidak = emm_record(contrast(e_f, method = "poly", adjust = "sidak")),
  pairwise_tukey = emm_record(contrast(e_f, method = "pairwise", adjust = "tukey"))
), "emm_sidak.json")

# ---- (d) lmerTest Satterthwaite df for ML and REML fits ------------------------------------
data(sleepstudy, package = "lme4")
save_csv(sleepstudy, "sleepstudy.csv")
satt <- function(formula, data, REML) {
  m <- lmerTest::lmer(formula, data = data, REML = REML)
  list(formula = deparse(formula), REML = REML, coefficients = coef_table(m),
       loglik = as.numeric(logLik(m)), deviance_or_remlcrit = as.numeric(-2 * logLik(m)),
       sigma = sigma(m), theta = as.list(getME(m, "theta")),
       vcov = unname(as.matrix(vcov(m))))
}
f_ss <- Reaction ~ Days + (Days | Subject)
f_a <- y ~ f + x + (1 | g)
save_json(list(
  notes = "lmerTest::lmer fits; coefficients = summary(m)$coefficients (Satterthwaite df, lmerTest's default).",
  sleepstudy_ml = c(list(data = "sleepstudy.csv"), satt(f_ss, sleepstudy, FALSE)),
  sleepstudy_reml = c(list(data = "sleepstudy.csv"), satt(f_ss, sleepstudy, TRUE)),
  covkeep_ml = c(list(data = "covkeep.csv"), satt(f_a, sim, FALSE)),
  covkeep_reml = c(list(data = "covkeep.csv"), satt(f_a, sim, TRUE))
), "satterthwaite_ml.json")

# ---- (e) glmmTMB Pearson residuals: beta and nbinom1 ----------------------------------------
set.seed(2026)
n_g <- 30; n_per <- 10
bd <- data.frame(g = factor(sprintf("g%02d", rep(seq_len(n_g), each = n_per))), x = round(rnorm(n_g * n_per), 4))
mu_b <- plogis(-0.5 + 0.8 * bd$x + rnorm(n_g, sd = 0.5)[as.integer(bd$g)])
phi_b <- 8
bd$y <- signif(rbeta(nrow(bd), mu_b * phi_b, (1 - mu_b) * phi_b), 8)
stopifnot(all(bd$y > 0 & bd$y < 1))
save_csv(bd, "beta_sim.csv")

m_beta <- glmmTMB(y ~ x + (1 | g), data = bd, family = beta_family())
mu <- fitted(m_beta); phi <- sigma(m_beta)
r_p <- residuals(m_beta, type = "pearson")
check_beta <- list(  # which denominator glmmTMB's Pearson residuals use
  max_abs_diff_vs_sqrt_mu_1mmu = max(abs(r_p - (bd$y - mu) / sqrt(mu * (1 - mu)))),
  max_abs_diff_vs_sqrt_mu_1mmu_over_1pphi = max(abs(r_p - (bd$y - mu) / sqrt(mu * (1 - mu) / (1 + phi)))))

data(Salamanders, package = "glmmTMB")
save_csv(Salamanders, "salamanders.csv")
m_nb1 <- glmmTMB(count ~ spp + mined + (1 | site), data = Salamanders, family = nbinom1)
mu1 <- fitted(m_nb1); a1 <- sigma(m_nb1)
r_p1 <- residuals(m_nb1, type = "pearson")
check_nb1 <- list(max_abs_diff_vs_sqrt_mu_1palpha = max(abs(r_p1 - (Salamanders$count - mu1) / sqrt(mu1 * (1 + a1)))))

tmb_record <- function(m) list(fixef = as.list(fixef(m)$cond), sigma = sigma(m),
  loglik = as.numeric(logLik(m)), pdHess = m$sdr$pdHess,
  variance_function = deparse(family(m)$variance),
  fitted = unname(fitted(m)),
  residuals_pearson = unname(residuals(m, type = "pearson")),
  residuals_response = unname(residuals(m, type = "response")))
save_json(list(
  notes = paste("glmmTMB's residuals(type = 'pearson') divide by sqrt(family(m)$variance(...)).",
                "For beta_family() that function is mu*(1-mu) (one argument; glmmTMB then multiplies by",
                "(predict(type='disp')/sigma)^2 = 1), so the 1/(1+phi) factor of the beta variance is left out.",
                "For nbinom1 it is mu*(1+alpha) with alpha = sigma(m). sigma(m) for beta is the precision phi."),
  beta = c(list(data = "beta_sim.csv", formula = "y ~ x + (1 | g)", family = "beta_family(link = 'logit')",
                true_values = list(intercept = -0.5, slope = 0.8, sd_g = 0.5, phi = phi_b)),
           tmb_record(m_beta), list(pearson_check = check_beta)),
  salamanders_nbinom1 = c(list(data = "salamanders.csv", formula = "count ~ spp + mined + (1 | site)",
                               family = "nbinom1", factor_levels = list(spp = levels(Salamanders$spp),
                               mined = levels(Salamanders$mined))),
                          tmb_record(m_nb1), list(pearson_check = check_nb1))
), "beta_pearson.json")

# ---- (f) zero prior weights: same fit as dropping those rows ---------------------------------
set.seed(2027)
zw <- data.frame(g = factor(sprintf("g%02d", rep(1:30, each = 10))), x = round(rnorm(300), 4))
ugz <- rnorm(30, sd = 0.5)[as.integer(zw$g)]
eta_c <- 1 + 0.5 * zw$x + ugz
zw$count <- rnbinom(300, mu = exp(eta_c), size = 2)
mu_p <- plogis(-0.3 + 0.6 * zw$x + ugz)
zw$prop <- signif(rbeta(300, mu_p * 10, (1 - mu_p) * 10), 8)
stopifnot(all(zw$prop > 0 & zw$prop < 1))
zw$w <- ifelse(runif(300) < 0.2, 0, sample(c(1, 2), 300, replace = TRUE))  # ~20% zero, others 1 or 2
save_csv(zw, "zero_weights.csv")
pos <- zw[zw$w > 0, ]

zw_fit <- function(formula, family, data) {
  m <- with_msgs(glmmTMB(formula, data = data, family = family, weights = w))
  list(nobs_rows = nrow(data), nobs = nobs(m$value), loglik = as.numeric(logLik(m$value)),
       AIC = AIC(m$value), BIC = BIC(m$value),
       fixef = as.list(fixef(m$value)$cond), sigma = sigma(m$value),
       sd_g = attr(VarCorr(m$value)$cond$g, "stddev")[[1]],
       messages = c(m$messages, m$warnings))
}
save_json(list(
  data = "zero_weights.csv", n_zero_weight = sum(zw$w == 0), n_rows = nrow(zw),
  notes = paste("Fits with weights = w on all rows vs on the rows with w > 0. logLik, fixef and sigma agree;",
                "glmmTMB's nobs() counts zero-weight rows too, so BIC differs."),
  nbinom2_all = zw_fit(count ~ x + (1 | g), nbinom2, zw),
  nbinom2_positive = zw_fit(count ~ x + (1 | g), nbinom2, pos),
  beta_all = zw_fit(prop ~ x + (1 | g), beta_family(), zw),
  beta_positive = zw_fit(prop ~ x + (1 | g), beta_family(), pos)
), "zero_weights.json")
cat("done\n")
