"""What runs exported files, below every stage that loads one (policies, export)."""
