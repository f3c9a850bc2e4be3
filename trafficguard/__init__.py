"""trafficguard: a traffic monitor that keeps only metadata unless a signed grant says otherwise."""

__version__ = "0.1.0"
