"""Test doubles shipped on purpose (as aiosmtpd.testing): a recorded-AMI server and a scripted
FastAGI peer that speaks as Asterisk 22 does. Tests and the benchmarks use them; no product
code imports this package."""
