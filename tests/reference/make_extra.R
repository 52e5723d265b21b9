# More reference fits, beyond the shared set: models with structures the shared cases do not
# cover (nested, crossed with slopes, 3-column terms, weights, factors, missing values, singular
# fits, GLMM slopes, crossed GLMM, probit, nAGQ = 0, proportions with weights, Poisson AGQ).
# Uses the helpers of make_reference.R. Usage (from tests/reference): Rscript make_extra.R
commandArgs <- function(trailingOnly = TRUE) c("extra", "none")
source("make_reference.R")
set.seed(424242)

sim_nested <- function() {
  S <- 25; C <- 4
  d <- expand.grid(pupil = 1:6, class = 1:C, school = 1:S)
  d$school <- sprintf("s%02d", d$school); d$class <- paste0("c", d$class)
  us <- rnorm(S, 0, 3)[as.integer(factor(d$school))]
  uc <- rnorm(S * C, 0, 2)[as.integer(factor(paste(d$school, d$class)))]
  d$x <- round(rnorm(nrow(d)), 3)
  d$y <- round(10 + 1.5 * d$x + us + uc + rnorm(nrow(d), 0, 2.5), 3)
  d[, c("school", "class", "x", "y")]
}
nest <- sim_nested()
save_case(lme4_case("nested_reml", y ~ x + (1 | school/class), "y ~ x + (1|school/class)", nest, dn(nest, "nested"),
          notes = "simulated: 25 schools x 4 classes x 6 pupils"))
save_case(lme4_case("nested_interaction_ml", y ~ x + (1 | school) + (1 | school:class), "y ~ x + (1|school) + (1|school:class)",
          nest, dn(nest, "nested"), REML = FALSE))

sim_crossed <- function() {
  ns <- 30; ni <- 20
  d <- expand.grid(subj = sprintf("S%02d", 1:ns), item = sprintf("I%02d", 1:ni), stringsAsFactors = FALSE)
  d <- d[sample(nrow(d), 450), ]
  d$x <- round(runif(nrow(d), -1, 1), 3)
  s <- as.integer(factor(d$subj)); i <- as.integer(factor(d$item))
  u0 <- rnorm(ns, 0, 1); u1 <- 0.5 * u0 + rnorm(ns, 0, 0.6); w <- rnorm(ni, 0, 0.8)
  d$y <- round(2 + 1 * d$x + u0[s] + u1[s] * d$x + w[i] + rnorm(nrow(d), 0, 1), 3)
  d$f <- sample(c("a", "b", "c"), nrow(d), replace = TRUE)
  d$z <- round(rnorm(nrow(d)), 3)
  d
}
cr <- sim_crossed()
save_case(lme4_case("crossed_slopes_reml", y ~ x + (x | subj) + (1 | item), "y ~ x + (x|subj) + (1|item)", cr, dn(cr, "crossed"),
          newdata = data.frame(x = c(0.5, -0.2), subj = c("S01", "S99"), item = c("I02", "I03"))))
save_case(lme4_case("three_column_term_ml", y ~ x + z + (1 + x + z | subj), "y ~ x + z + (1 + x + z|subj)", cr, dn(cr, "crossed"), REML = FALSE))
cr2 <- cr; cr2$f <- factor(cr2$f)
save_case(lme4_case("factor_interaction_reml", y ~ f * x + (1 | subj) + (0 + x | item), "y ~ C(f) * x + (1|subj) + (0 + x|item)", cr2, dn(cr, "crossed")))

# Fits with prior weights: the helper has no weights argument, so these are packed here.
weighted_case <- function(name, m, formula_py, dataname, weights, notes) {
  fe <- fixef(m); V <- as.matrix(vcov(m)); reml <- isREML(m)
  list(case = name, reference = paste0("lme4 ", packageVersion("lme4"), ", ", R.version.string),
       data = write_data(dataname$df, dataname$name), formula_r = deparse1(formula(m)), formula_py = formula_py,
       weights = weights, family = if (isGLMM(m)) family(m)$family else "gaussian",
       link = if (isGLMM(m)) family(m)$link else "identity",
       method = if (isGLMM(m)) "Laplace" else if (reml) "REML" else "ML", nAGQ = 1,
       nobs = nobs(m), ngroups = as.list(ngrps(m)), fixef_names = I(names(fe)), fixef = I(unname(fe)),
       fixef_se = I(unname(sqrt(diag(V)))), vcov = unname(V), theta = I(unname(getME(m, "theta"))), sigma = sigma(m),
       varcorr = varcorr_df(m), loglik = as.numeric(logLik(m)), df = attr(logLik(m), "df"),
       deviance = if (reml) NULL else deviance(m),
       reml_criterion = if (reml) unname(getME(m, "devcomp")$cmp[["REML"]]) else NULL,
       aic = AIC(m), bic = BIC(m), singular = isSingular(m), ranef = ranef_list(m), notes = notes)
}
ss <- lme4::sleepstudy
ssw <- ss; ssw$w <- round(runif(nrow(ss), 0.5, 2), 2)
save_case(weighted_case("sleepstudy_weights_reml", lmer(Reaction ~ Days + (Days | Subject), ssw, weights = w),
          "Reaction ~ Days + (Days|Subject)", dn(ssw, "sleepstudy_weights"), "w", "prior weights w"))
ssna <- ss; ssna$Reaction[c(3, 40, 41, 100)] <- NA; ssna$Days[c(7, 150)] <- NA
save_case(lme4_case("sleepstudy_missing_ml", Reaction ~ Days + (1 | Subject), "Reaction ~ Days + (1|Subject)", ssna, dn(ssna, "sleepstudy_missing"), REML = FALSE,
          notes = "6 rows with a missing value; lme4 drops them"))
sing <- nest; sing$y <- round(10 + 1.5 * sing$x + rnorm(nrow(sing), 0, 2.5), 3)
save_case(lme4_case("singular_reml", y ~ x + (1 | school), "y ~ x + (1|school)", sing, dn(sing, "singular"),
          notes = "no school effect in the simulation: expect a boundary fit"))
pn <- lme4::Penicillin
save_case(lme4_case("penicillin_crossed_ml", diameter ~ 1 + (1 | plate) + (1 | sample), "diameter ~ 1 + (1|plate) + (1|sample)", pn, dn(pn, "penicillin"), REML = FALSE))

# GLMMs
sim_bin_slope <- function() {
  J <- 40; nj <- sample(15:30, J, replace = TRUE); g <- rep(sprintf("g%02d", 1:J), nj); x <- round(rnorm(sum(nj)), 3)
  u0 <- rnorm(J, 0, 0.8); u1 <- rnorm(J, 0, 0.5)
  eta <- -0.3 + 0.7 * x + u0[rep(1:J, nj)] + u1[rep(1:J, nj)] * x
  data.frame(g = g, x = x, y = rbinom(sum(nj), 1, plogis(eta)))
}
bs <- sim_bin_slope()
save_case(lme4_case("binomial_slope_laplace", y ~ x + (x | g), "y ~ x + (x|g)", bs, dn(bs, "binomial_slope"), family = binomial()))
save_case(lme4_case("binomial_probit_laplace", y ~ x + (1 | g), "y ~ x + (1|g)", bs, dn(bs, "binomial_slope"), family = binomial(link = "probit")))
sim_pois_crossed <- function() {
  d <- expand.grid(a = sprintf("a%02d", 1:25), b = sprintf("b%02d", 1:12), rep = 1:2, stringsAsFactors = FALSE)
  d$x <- round(runif(nrow(d), 0, 1), 3)
  eta <- 0.5 + 0.8 * d$x + rnorm(25, 0, 0.5)[as.integer(factor(d$a))] + rnorm(12, 0, 0.3)[as.integer(factor(d$b))]
  d$y <- rpois(nrow(d), exp(eta)); d
}
pc <- sim_pois_crossed()
save_case(lme4_case("poisson_crossed_laplace", y ~ x + (1 | a) + (1 | b), "y ~ x + (1|a) + (1|b)", pc, dn(pc, "poisson_crossed"), family = poisson()))
save_case(lme4_case("poisson_agq10", y ~ x + (1 | a), "y ~ x + (1|a)", pc, dn(pc, "poisson_crossed"), family = poisson(), nAGQ = 10))

cb <- lme4::cbpp
save_case(lme4_case("cbpp_binomial_nagq0", cbind(incidence, size - incidence) ~ period + (1 | herd), "cbind(incidence, size - incidence) ~ C(period) + (1|herd)",
          cb, dn(cb, "cbpp"), family = binomial(), nAGQ = 0))
cbp <- cb; cbp$prop <- cbp$incidence / cbp$size
save_case(weighted_case("cbpp_proportion_weights", glmer(prop ~ period + (1 | herd), cbp, family = binomial, weights = size),
          "prop ~ C(period) + (1|herd)", dn(cbp, "cbpp_prop"), "size", "proportions with binomial trials as weights"))
