"""DINO self-supervised pretraining: small parts (head, loss, schedules, augmentations) tested
alone, assembled in a LightningModule (`module.py`) and run by `python -m xferlab.pretrain`."""
