"""Product writers and readers, one module per format, and the product table (`table`).

Every writer takes the same in-memory pair, a (lines, samples) float32 probability with NaN
and a uint8 flag with 255 where a pixel has no value, so formats can be added independently.
"""
