"""Pure plot functions (DataFrame in, HoloViews object out) and Panel pages."""
