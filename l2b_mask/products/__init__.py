"""Product writers and readers, one module per format, the layer table (`layers`) they all
walk, and the product table (`table`).

Every writer takes the same checked layers (`layers.prepare`: a (lines, samples) float32
probability with NaN, a uint8 flag with 255 where a pixel has no value, and the other layers of
the table), so formats and layers can be added independently.
"""
