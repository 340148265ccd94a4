"""What a practitioner would try instead of zipping, written as zip directories (plan.json +
weights.npz + sources/) so that evaluate, convert and bench apply unchanged:

- ``frozen_trunk``: task A's hidden layers (all of them on any graph whose head is its last Dense
  layer; the first k on a chain network) serve both tasks, task B's layers after them
  retrained on A's features (A's function unchanged, exactly);
- ``multitask_finetune``: one trunk (every hidden layer shared) initialised from A's weights or
  from a common pretrained model, each task's own head, all trained jointly on both tasks.

Both retrain with the zip's own settings (``ZipConfig.retrain``: steps, Adam rate and schedule,
batch, soft targets), so a comparison at equal stored bytes is also at equal retraining effort.
"""

from .run import frozen_trunk, multitask_finetune  # noqa: F401
