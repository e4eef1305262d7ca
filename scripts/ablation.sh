#!/usr/bin/env bash
# The paper's guidance ablation in miniature: the three guidance variants trained with the same
# small budget on the synthetic data, then evaluated side by side (docs/ablation/). flow_prior is
# off for all three: it adds the displacement field, which codes-only guidance does not have.
#   gdpw synth -o data/synth && bash scripts/ablation.sh
set -euo pipefail
STEPS=${STEPS:-1200}
for g in neural_codes geom_disp both; do
  gdpw train --config configs/demo_cpu.yaml --fresh --set output=runs/ablation_$g --set steps=$STEPS \
    --set generator.guidance=$g --set generator.flow_prior=false --set "optim.milestones=[$((STEPS * 3 / 4)), $((STEPS * 11 / 12))]"
  python scripts/export_demo_checkpoint.py runs/ablation_$g/checkpoints/last.pt runs/ablation_$g/generator.pt
done
gdpw evaluate --data data/synth --max-pairs 48 -o docs/ablation \
  --checkpoint runs/ablation_neural_codes/generator.pt --name "neural_codes ($STEPS steps)" \
  --checkpoint runs/ablation_geom_disp/generator.pt --name "geom_disp ($STEPS steps)" \
  --checkpoint runs/ablation_both/generator.pt --name "both ($STEPS steps)"
