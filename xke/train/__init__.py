"""xke.train"""
