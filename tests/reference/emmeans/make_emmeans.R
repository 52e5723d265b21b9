# Estimated marginal means and contrasts for midas_glmm's tests (issue 14, item 3).
# Usage (from tests/reference): Rscript emmeans/make_emmeans.R
# emmeans::emmeans / contrast on an LMM with a factor interaction (crossed.csv with
# g2 = "hi" if z > 0.5 else "lo"; Kenward-Roger, emmeans' default, and Satterthwaite), and on
# the cbpp binomial GLMM (link and response scale; glmer with tolPwrss = 1e-12).
suppressPackageStartupMessages({ library(lme4); library(emmeans); library(jsonlite) })
ref <- paste0("emmeans ", packageVersion("emmeans"), ", pbkrtest ", packageVersion("pbkrtest"), ", lme4 ",
              packageVersion("lme4"), ", ", R.version.string)
df_list <- function(x) as.list(as.data.frame(x))

cr <- read.csv("extra/data/crossed.csv")
for (v in c("subj", "item", "f")) cr[[v]] <- factor(cr[[v]])
cr$g2 <- factor(ifelse(cr$z > 0.5, "hi", "lo"))
m <- lmer(y ~ x + f * g2 + (1 | subj) + (1 | item), cr)
e <- emmeans(m, "f")
out <- list(reference = ref, data = "extra/data/crossed.csv", formula_py = "y ~ x + C(f) * g2 + (1|subj) + (1|item)",
  emm_f = df_list(e),
  emm_f_satterthwaite = df_list(emmeans(m, "f", lmer.df = "satterthwaite")),
  emm_f_by_g2 = df_list(emmeans(m, "f", by = "g2")),
  emm_f_g2 = df_list(emmeans(m, c("f", "g2"))),
  pairwise_tukey = df_list(contrast(e, "pairwise", adjust = "tukey")),
  pairwise_bonferroni = df_list(contrast(e, "pairwise", adjust = "bonferroni")),
  trt_holm = df_list(contrast(e, "trt.vs.ctrl", adjust = "holm")),
  poly = df_list(contrast(e, "poly")),
  pairwise_by_g2 = df_list(contrast(emmeans(m, "f", by = "g2"), "pairwise", adjust = "tukey")))
write(toJSON(out, auto_unbox = TRUE, digits = NA), "emmeans/crossed_interaction.json")

cbpp <- read.csv("data/cbpp.csv"); cbpp$herd <- factor(cbpp$herd); cbpp$period <- factor(cbpp$period)
g <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, family = binomial,
           control = glmerControl(tolPwrss = 1e-12))
eg <- emmeans(g, "period")
out <- list(reference = ref, data = "data/cbpp.csv", formula_py = "cbind(incidence, size - incidence) ~ C(period) + (1|herd)",
  emm_period = df_list(eg), emm_period_response = df_list(emmeans(g, "period", type = "response")),
  pairwise_tukey = df_list(contrast(eg, "pairwise", adjust = "tukey")))
write(toJSON(out, auto_unbox = TRUE, digits = NA), "emmeans/cbpp_binomial.json")
cat("done\n")
