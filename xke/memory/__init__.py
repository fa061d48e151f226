"""xke.memory"""
