"""Local QA over Chinese documents with Chinese-Mixtral."""

__version__ = "0.1.0"
