"""Request rules shared by every job kind and route: errors, input limits, LoRA, the deadline."""
