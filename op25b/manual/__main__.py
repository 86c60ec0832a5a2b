"""stub"""
import sys
print("stub", sys.argv)
