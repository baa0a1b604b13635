"""colour-world: a tiny text-to-image world whose attribution truth is known (issue 14).

32x32 scenes of two objects that differ in colour and shape, prompts "a C1 S1 and a C2 S2", a
small diffusers-built model (``model``), a word-level tokenizer (``tokenizer``), a diffusers
pipeline (``pipeline``), its training script (``train``) and a DAAM-vs-truth measurement
(``evaluate``). ``scenes`` holds the world itself and the truth derived from pixels.
"""
