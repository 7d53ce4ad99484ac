"""The distill stage: knowledge distillation from the teacher into the chosen student.

stage.py              the entry point: fp32 KD, then quantization-aware KD for INT8 targets
losses.py             logit KD losses (Hinton, DIST, DKD)
feature_losses.py     feature KD losses (FitNets, attention transfer, ND) and layer pairing
feature_distiller.py  the taps and adapters that feed the feature losses during training
student_init.py       where the student's weights start (random, the teacher's, a checkpoint)
teacher_outputs.py    the teacher's outputs cached on disk per sample and augmentation epoch
"""
