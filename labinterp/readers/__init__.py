"""Readers turn one export file into the RAW table (see labinterp.schema.RAW).

They know file formats, never clinical meaning: which analyte a row is, what its unit
means and whether it is plausible are the normalizer's job.
"""
