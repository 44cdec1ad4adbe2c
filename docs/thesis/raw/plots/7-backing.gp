$d0 << EOD
-0.15 432.97329848368844
0.85 403.24397258580296
EOD
$d1 << EOD
0.15 6174.792455014667
1.15 1525.4201495703057
EOD
$d2 << EOD
1.0 2081.0
2.0 79.0
EOD
$d3 << EOD
1.0 2372.0
2.0 264.0
EOD
$d4 << EOD
0.0 2178.0
EOD
set terminal pngcairo noenhanced size 900,640 font 'DejaVu Sans,10'
set output '/work/wt-thesis/docs/thesis/img/7-backing.png'
set title "#7 region backed by memory vs by an mmap'd file"
set xlabel ""
set ylabel "MiB/s (log)"
set grid
set key below left Left reverse maxcols 2 height 1
set logscale y
set style fill solid 0.6
set boxwidth 0.3
set xtics ('memory' 0, 'file' 1, 'directory (thesis)' 2)
set xrange [-0.6:2.6]
plot $d0 using 1:2 with boxes  title "ferry: pre-copy pull, 0 ms", \
  $d1 using 1:2 with boxes  title "ferry: local read (baseline)", \
  $d2 using 1:2 with linespoints dt 2 pt 6 ps 1.6 lw 1.5 title "thesis: direct mount", \
  $d3 using 1:2 with linespoints dt 2 pt 8 ps 1.6 lw 1.5 title "thesis: managed mount", \
  $d4 using 1:2 with points pt 4 ps 1.6 title "thesis: memory backend, managed (#10)"
