"""Auto-Demo batch prompting for LangChain."""
