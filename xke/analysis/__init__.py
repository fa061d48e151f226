"""xke.analysis"""
