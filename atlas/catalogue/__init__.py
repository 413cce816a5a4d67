"""What atlas knows before it sees data: gene symbols, previous symbols and orthologues
(:mod:`atlas.catalogue.genes`) and the registry of neutrophil signatures (:mod:`atlas.catalogue.signatures`)."""
