"""The model: the sentence encoder today; fine-tuning, baselines and evaluation later."""
