# Reference fits for glmmTMB's families: nbinom2, nbinom1 and beta_family, Laplace ML with the
# dispersion estimated jointly. Run from this folder: Rscript make_tmb_families.R
# R 4.2.2, glmmTMB 1.1.5 (Debian r-cran-glmmtmb), lme4 1.1-31 (for grouseticks), jsonlite.
suppressPackageStartupMessages({library(glmmTMB); library(lme4); library(jsonlite)})

save_case <- function(name, formula, formula_py, data, datafile, notes, family = nbinom2) {
  write.csv(data, file.path("data", datafile), row.names = FALSE)
  t0 <- proc.time()[["elapsed"]]
  fam <- if (is.function(family)) family() else family
  m <- glmmTMB(formula, data = data, family = fam)
  elapsed <- proc.time()[["elapsed"]] - t0
  vc <- VarCorr(m)$cond
  varcorr <- do.call(rbind, lapply(names(vc), function(g) {
    data.frame(grp = g, var1 = colnames(vc[[g]])[1], vcov = vc[[g]][1, 1], sdcor = sqrt(vc[[g]][1, 1]))
  }))
  re <- ranef(m, condVar = TRUE)$cond
  rl <- lapply(names(re), function(g) list(levels = rownames(re[[g]]), values = re[[g]][, 1],
                                           condsd = sqrt(attr(re[[g]], "condVar")[1, 1, ])))
  names(rl) <- names(re)
  out <- list(case = name, reference = paste0("glmmTMB ", packageVersion("glmmTMB"), ", ", R.version.string),
              data = file.path("data", datafile), formula_r = deparse(formula), formula_py = formula_py,
              family = fam$family, link = fam$link, method = "Laplace", nAGQ = 1, nobs = nobs(m),
              fixef_names = names(fixef(m)$cond), fixef = unname(fixef(m)$cond),
              fixef_se = unname(sqrt(diag(vcov(m)$cond))), vcov = unname(as.matrix(vcov(m)$cond)),
              varcorr = varcorr, sigma_glmmTMB = sigma(m), loglik = as.numeric(logLik(m)),
              df = attr(logLik(m), "df"), aic = AIC(m), bic = BIC(m), ranef = rl,
              factor_levels = lapply(Filter(is.factor, data), levels),
              seconds_glmmTMB = elapsed, notes = notes)
  writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), paste0(name, ".json"))
}

data(Salamanders, package = "glmmTMB")
sal <- Salamanders[, c("site", "mined", "spp", "count")]
sal$site <- as.character(sal$site)  # spp and mined stay factors: their R level order is saved
save_case("salamanders_nb2", count ~ spp + mined + (1 | site), "count ~ C(spp) + C(mined) + (1|site)", sal,
          "salamanders.csv", "glmmTMB's Salamanders data (site, mined, spp, count); spp and mined as factors with R's level order")

data(grouseticks, package = "lme4")
gt <- grouseticks[, c("TICKS", "BROOD", "LOCATION", "YEAR", "cHEIGHT")]
gt$BROOD <- as.character(gt$BROOD); gt$LOCATION <- as.character(gt$LOCATION); gt$YEAR <- as.character(gt$YEAR)
save_case("grouseticks_nb2", TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | LOCATION),
          "TICKS ~ C(YEAR) + cHEIGHT + (1|BROOD) + (1|LOCATION)", gt, "grouseticks.csv",
          "lme4's grouseticks: tick counts on grouse chicks, broods nested in locations (crossed coding), year and centred height")

set.seed(20261126)
g <- rep(sprintf("g%02d", 1:40), times = sample(8:20, 40, replace = TRUE))
x <- round(rnorm(length(g)), 4)
u <- rnorm(40, 0, 0.6)[as.integer(factor(g))]
mu <- exp(0.5 + 0.4 * x + u)
sim <- data.frame(g = g, x = x, y = rnbinom(length(g), size = 1.5, mu = mu))
save_case("simulated_nb2", y ~ x + (1 | g), "y ~ x + (1|g)", sim, "simulated_nb2.csv",
          "simulated: 40 groups of 8-20 rows; beta = (0.5, 0.4), sd_u = 0.6, size theta = 1.5")

save_case("salamanders_nb1", count ~ spp + mined + (1 | site), "count ~ C(spp) + C(mined) + (1|site)", sal,
          "salamanders.csv", "glmmTMB's Salamanders data with nbinom1 (variance mu (1 + phi))", family = nbinom1)

data(Owls, package = "glmmTMB")
owls <- data.frame(NCalls = Owls$SiblingNegotiation, FoodTreatment = Owls$FoodTreatment,
                   SexParent = Owls$SexParent, BroodSize = Owls$BroodSize, Nest = as.character(Owls$Nest))
save_case("owls_nb1", NCalls ~ FoodTreatment * SexParent + offset(log(BroodSize)) + (1 | Nest),
          "NCalls ~ FoodTreatment * SexParent + offset(np.log(BroodSize)) + (1|Nest)", owls, "owls.csv",
          "glmmTMB's Owls: sibling negotiation calls, food treatment x parent's sex, offset log(brood size), nbinom1",
          family = nbinom1)

set.seed(20261127)
g <- rep(sprintf("g%02d", 1:30), times = sample(10:25, 30, replace = TRUE))
x <- round(rnorm(length(g)), 4)
u <- rnorm(30, 0, 0.5)[as.integer(factor(g))]
mu <- plogis(-0.3 + 0.6 * x + u)
phi <- 8
bet <- data.frame(g = g, x = x, y = round(rbeta(length(g), mu * phi, (1 - mu) * phi), 6))
bet$y <- pmin(pmax(bet$y, 1e-6), 1 - 1e-6)
save_case("simulated_beta", y ~ x + (1 | g), "y ~ x + (1|g)", bet, "simulated_beta.csv",
          "simulated: 30 groups of 10-25 rows; logit mean -0.3 + 0.6 x + u, sd_u = 0.5, precision phi = 8",
          family = beta_family())
