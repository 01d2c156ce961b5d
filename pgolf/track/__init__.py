"""pgolf.track"""
