"""One module per workflow rule: plain arguments, files in, files out.

``workflow/scripts/*.py`` only unpack the ``snakemake`` object and call these, so every step can
also be run (and tested) from Python without Snakemake. Each rule's code fingerprint
(:func:`diffusion_lib.settings.provenance.code_fingerprint`) starts from its module here, so a module
imports only what its rule needs: editing the report code never retrains a model.
"""
