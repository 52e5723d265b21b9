# ANOVA tables and contrast tests for midas_glmm's tests (issue 14, item 1).
# Usage (from tests/reference): Rscript anova/make_anova.R
# lmerTest::anova(m, type = 1 | 3, ddf = "Satterthwaite" | "Kenward-Roger"), lmerTest::contest
# (joint F and per-row t) for a two-row contrast, and car::Anova(type = 3) Wald chi-square for a
# binomial GLMM (glmer with tolPwrss = 1e-12, see make_tight.R). Writes anova/<case>.json.
suppressPackageStartupMessages({ library(lmerTest); library(car); library(jsonlite) })

tab <- function(a) {
  out <- lapply(seq_len(nrow(a)), function(i) as.list(a[i, , drop = TRUE]))
  names(out) <- rownames(a)
  out
}
ref <- paste0("lmerTest ", packageVersion("lmerTest"), ", pbkrtest ", packageVersion("pbkrtest"), ", car ",
              packageVersion("car"), ", lme4 ", packageVersion("lme4"), ", ", R.version.string)

sleep <- read.csv("data/sleepstudy.csv"); sleep$Subject <- factor(sleep$Subject)
crossed <- read.csv("extra/data/crossed.csv")
for (v in c("subj", "item", "f")) crossed[[v]] <- factor(crossed[[v]])
crossed$g2 <- factor(ifelse(crossed$z > 0.5, "hi", "lo"))  # a second factor for the interaction case

lmms <- list(
  list(case = "sleepstudy_slope", m = lmer(Reaction ~ Days + (Days | Subject), sleep), data = "data/sleepstudy.csv",
       py = "Reaction ~ Days + (Days|Subject)", terms_py = c("Days"), types = c(1, 3)),
  list(case = "crossed_factor", m = lmer(y ~ x + f + z + (1 | subj) + (1 | item), crossed),
       data = "extra/data/crossed.csv", py = "y ~ x + C(f) + z + (1|subj) + (1|item)",
       terms_py = c("x", "C(f)", "z"), types = c(1, 3),
       L = rbind(c(0, 1, 0, 0, 0), c(0, 0, 1, -1, 0))),
  list(case = "crossed_interaction", m = lmer(y ~ x * f + z + (1 | subj) + (1 | item), crossed),
       data = "extra/data/crossed.csv", py = "y ~ x * C(f) + z + (1|subj) + (1|item)",
       terms_py = c("x", "C(f)", "z", "x:C(f)"), types = c(1, 3)),
  list(case = "factor_interaction", m = lmer(y ~ f * g2 + x + (1 | subj) + (1 | item), crossed),
       data = "extra/data/crossed.csv", py = "y ~ C(f) * g2 + x + (1|subj) + (1|item)",
       terms_py = c("C(f)", "g2", "x", "C(f):g2"), types = c(1, 3))
)
for (cs in lmms) {
  out <- list(case = cs$case, reference = ref, data = cs$data, formula_py = cs$py, terms_py = cs$terms_py,
              fixef_names = names(fixef(cs$m)))
  for (type in cs$types) for (ddf in c("Satterthwaite", "Kenward-Roger")) {
    a <- anova(cs$m, type = type, ddf = ddf)
    out[[paste0("anova_type", type, "_", ddf)]] <- list(rows = rownames(a), table = tab(as.data.frame(a)))
  }
  for (ddf in c("Satterthwaite", "Kenward-Roger")) {
    a <- drop1(cs$m, ddf = ddf)
    out[[paste0("drop1_", ddf)]] <- list(rows = rownames(a), table = tab(as.data.frame(a)))
  }
  if (!is.null(cs$L)) {
    out$L <- cs$L
    for (ddf in c("Satterthwaite", "Kenward-Roger")) {
      out[[paste0("contest_", ddf)]] <- as.list(contest(cs$m, cs$L, ddf = ddf))
      out[[paste0("contest1D_", ddf)]] <- as.list(as.data.frame(contest(cs$m, cs$L, ddf = ddf, joint = FALSE)))
    }
  }
  write(toJSON(out, auto_unbox = TRUE, digits = NA), file.path("anova", paste0(cs$case, ".json")))
  cat(cs$case, "\n")
}

cbpp <- read.csv("data/cbpp.csv"); cbpp$herd <- factor(cbpp$herd); cbpp$period <- factor(cbpp$period)
g <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, family = binomial,
           control = glmerControl(tolPwrss = 1e-12))
a <- car::Anova(g, type = 3)
out <- list(case = "cbpp_binomial", reference = ref, data = "data/cbpp.csv",
            formula_py = "cbind(incidence, size - incidence) ~ C(period) + (1|herd)", family = "binomial",
            rows_py = c("(Intercept)", "C(period)"), anova_type3_wald = list(rows = rownames(a), table = tab(as.data.frame(a))))
write(toJSON(out, auto_unbox = TRUE, digits = NA), file.path("anova", "cbpp_binomial.json"))
cat("cbpp_binomial\n")

# lmerTest::ranova on three random-effects structures
rt <- function(r) list(rows = rownames(r), npar = r$npar, logLik = r$logLik, AIC = r$AIC,
                       LRT = ifelse(is.na(r$LRT), NA, r$LRT), Df = r$Df, p = r[["Pr(>Chisq)"]])
ran <- list(
  sleepstudy_slope = list(m = lmer(Reaction ~ Days + (Days | Subject), sleep), py = "Reaction ~ Days + (Days|Subject)",
                          data = "data/sleepstudy.csv"),
  sleepstudy_uncorrelated = list(m = lmer(Reaction ~ Days + (Days || Subject), sleep),
                                 py = "Reaction ~ Days + (Days||Subject)", data = "data/sleepstudy.csv"),
  crossed_slopes = list(m = lmer(y ~ x + (x | subj) + (1 | item), crossed), py = "y ~ x + (x|subj) + (1|item)",
                        data = "extra/data/crossed.csv"),
  sleepstudy_intercept_ml = list(m = lmer(Reaction ~ Days + (1 | Subject), sleep, REML = FALSE),
                                 py = "Reaction ~ Days + (1|Subject)", data = "data/sleepstudy.csv", method = "ML")
)
out <- lapply(ran, function(x) list(formula_py = x$py, data = x$data, method = if (is.null(x$method)) "REML" else x$method,
                                    ranova = rt(ranova(x$m))))
write(toJSON(list(reference = ref, cases = out), auto_unbox = TRUE, digits = NA, na = "null"), file.path("anova", "ranova.json"))
cat("ranova\n")
