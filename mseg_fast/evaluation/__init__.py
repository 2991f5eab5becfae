"""MSeg's evaluation protocol over datasets and models (beside eval/, which holds the inference core and
the metrics that in-training validation shares): which combination applies, what it needs."""
