"""pgolf.artifact"""
