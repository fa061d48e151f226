"""xke.eval"""
