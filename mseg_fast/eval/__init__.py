"""Metrics (the validation scores and MSeg's), in-training validation, and the inference core that evaluation shares."""
