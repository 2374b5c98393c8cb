#!/usr/bin/env bash
# Train on a slurm cluster, one process per GPU, started by srun:
#
#     tools/slurm_train.sh PARTITION JOB_NAME CONFIG [--resume] [KEY VALUE ...]
#     GPUS=16 GPUS_PER_NODE=8 tools/slurm_train.sh gpu mask_r50 configs/e2e_mask_rcnn_R_50_FPN_1x.yaml \
#         OUTPUT_DIR output/mask_r50 SOLVER.REFERENCE_WORLD_SIZE 8
#
# Environment overrides (as mmdetection's slurm_train.sh):
#   GPUS           processes in all (default 8)
#   GPUS_PER_NODE  processes and GPUs per node (default 8, at most GPUS)
#   CPUS_PER_TASK  CPU cores per process (default 5; DATALOADER.NUM_WORKERS should fit in it)
#   SRUN_ARGS      more srun options, e.g. "--time=2-00:00:00 --account=me"
#   PYTHON         the interpreter (default: python)
#
# Every process runs tools/train_net.py; maskrcnn/utils/comm.py reads its rank, the world size,
# its local rank and the master's address from slurm's variables (SLURM_PROCID,
# SLURM_STEP_NUM_TASKS, SLURM_LOCALID, the first host of SLURM_STEP_NODELIST; port
# 20000 + SLURM_JOB_ID % 10000 unless MASTER_PORT is set). --kill-on-bad-exit stops every
# process when one fails; restart with --resume.
set -euo pipefail

if [ "$#" -lt 3 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG [--resume] [KEY VALUE ...]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
if [ "${GPUS_PER_NODE}" -gt "${GPUS}" ]; then
    GPUS_PER_NODE=${GPUS}
fi
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}
TOOLS_DIR=$(cd "$(dirname "$0")" && pwd)

# SRUN_ARGS is split on spaces on purpose (several options); the training arguments keep their
# quoting (SOLVER.STEPS "(60000, 80000)").
# shellcheck disable=SC2086
srun --partition="${PARTITION}" \
    --job-name="${JOB_NAME}" \
    --gres=gpu:"${GPUS_PER_NODE}" \
    --ntasks="${GPUS}" \
    --ntasks-per-node="${GPUS_PER_NODE}" \
    --cpus-per-task="${CPUS_PER_TASK}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "${PYTHON}" -u "${TOOLS_DIR}/train_net.py" --config-file "${CONFIG}" "$@"
