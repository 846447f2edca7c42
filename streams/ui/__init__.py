"""The web console (`opsloop ui`): server-rendered pages over the read API's query functions."""
