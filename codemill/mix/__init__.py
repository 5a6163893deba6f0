"""Mixes: each document's kind (code / NL about code / NL) and the token-share plans
that turn the cleaned corpus into Code Llama's training sets."""
