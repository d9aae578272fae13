"""ablate: reproduce, measure and extend the ResNet -> ConvNeXt roadmap of "A ConvNet for the 2020s"."""
__version__ = "0.1.0"
