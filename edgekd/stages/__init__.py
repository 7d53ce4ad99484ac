"""One module per pipeline stage; the order lives in edgekd.pipeline.STAGES."""
