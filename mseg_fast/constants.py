"""Constants shared by data, loss and metrics.

One named ignore value for the whole project (STYLE.md habit 5): labels carry it, the
loss skips it, metrics skip it, padding writes it.
"""

IGNORE_LABEL = 255

# ImageNet statistics on 0..255 RGB, as MSeg normalises (reference §3.7 step 8).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
