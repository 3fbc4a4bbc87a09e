#!/bin/sh
# Issue 16: polyphony-resolved reports of the shipped (standard-trained) models against the previous shipped models
# (commit 37d0ab5, quick-trained) and the classical baseline, on the standard test fold and the ood set. Needs
# data/synth_standard, data/synth_ood (README "Localisation at scale") and runs/{foa,mic}_full_standard. Every DOAnet
# is scored with both track-id rules (raw slots, the paper's protocol; continuity, the shipped default). Resumable:
# finished baseline folders and report systems are reused. About 2 h of 2-core CPU, most of it the MIC baseline.
set -e
S=data/synth_standard; O=data/synth_ood
for D in $S $O; do
  R=runs/baseline_$(basename $D)
  for sys in foa_oracle foa_detect mic_oracle; do
    fmt=${sys%_*}; ref=""; [ ${sys#*_} = oracle ] && ref="--ref $D/metadata_dev"
    [ -f $R/$sys.json ] && continue
    python scripts/baseline.py $D/${fmt}_dev/fold1_*.wav --format $fmt $ref --out $R/$sys
    python scripts/evaluate.py --pred $R/$sys --ref $D/metadata_dev --split test --json $R/$sys.json
  done
done
for fmt in foa mic; do
  prev=runs/previous_doanet_$fmt
  [ -d $prev ] || { mkdir -p $prev && git archive 37d0ab5 dtbt_tf/saved_models/doanet_$fmt | tar -x -C $prev --strip-components=3; }
  extra=""; [ $fmt = foa ] && extra="--pred standard:baseline_foa_threshold=runs/baseline_synth_standard/foa_detect --pred ood:baseline_foa_threshold=runs/baseline_synth_ood/foa_detect"
  python benchmarks/localisation_report.py --format $fmt --data standard=$S --data ood=$O \
    --model doanet_$fmt=runs/${fmt}_full_standard --model previous_doanet_$fmt=$prev \
    --pred standard:baseline_${fmt}_oracle=runs/baseline_synth_standard/${fmt}_oracle \
    --pred ood:baseline_${fmt}_oracle=runs/baseline_synth_ood/${fmt}_oracle $extra --tracking slots,continuity \
    --work runs/localisation_report --json benchmarks/results/localisation_$fmt.json
done
