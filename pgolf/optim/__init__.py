"""pgolf.optim"""
