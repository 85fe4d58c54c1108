"""The two no-value markers of every product: one definition, so formats cannot drift apart."""

FLAG_NO_VALUE = 255  # uint8 flags (cloud mask, cloud shadow): the pixel has no value
FLOAT_NO_VALUE = -9999.0  # float bands and files (probability, distance, location): likewise
