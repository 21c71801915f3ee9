# Run on the lent H200 (2026-12-04) from the repo root, with .whl/mix.h5 = a copy of
# results/datasets/Foraging-8x8-2p-2f-coop-v3/mix_200e_1000p_misodice.h5 (after phase 2 of the oracle labels) and the
# project requirements on PYTHONPATH; OUT = the folder whose files come back.
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
C="--env-config=lbf_8x8_2p_2f_coop with offline_dataset=.whl/mix.h5 save_model=False use_tensorboard=False use_cuda=True agent=rnn hidden_dim=64"
mkdir -p /tmp/logs
for s in 0 1 2 3; do
  timeout 245 python3 src/main.py --config=omapl $C seed=$s local_results_path=/tmp/r/omapl_s$s preference_set=oracle omapl_label_name=gpu_rnn_s$s label_overwrite=True > /tmp/logs/omapl_s$s.log 2>&1 &
  timeout 245 python3 src/main.py --config=omiga $C seed=$s local_results_path=/tmp/r/marl_sl_s$s name=marl_sl offline_reward=label:oracle_s${s}_reward_hat > /tmp/logs/marl_sl_s$s.log 2>&1 &
done
wait
for f in /tmp/logs/*.log; do echo "== $f"; grep -E "Device|Finished offline|Final evaluation|Error" $f | tail -3; done
tar czf $OUT/runs.tgz /tmp/logs $(find /tmp/r -name info.json -o -name config.json | grep sacred) 2>/dev/null
