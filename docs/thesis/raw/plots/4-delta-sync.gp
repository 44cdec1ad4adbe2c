$d0 << EOD
-0.18 2.6051673889160156
0.82 0.175572545
EOD
$d1 << EOD
0.18 10.422822952270508
1.18 0.7455235099987476
EOD
$d2 << EOD
0.0 2.5625
EOD
set terminal pngcairo noenhanced size 900,640 font 'DejaVu Sans,10'
set output '/work/wt-thesis/docs/thesis/img/4-delta-sync.png'
set title "#4 delta sync of a changed 256 MiB file (1% of pages) (thesis: not measured)"
set xlabel ""
set ylabel "MiB on the wire / seconds"
set grid
set key below left Left reverse maxcols 2 height 1
set style fill solid 0.6
set boxwidth 0.35
set xtics ('MiB on the wire' 0, 'time (s)' 1)
set xrange [-0.6:1.6]
plot $d0 using 1:2 with boxes  title "ferry (finalize of a tracked file region)", \
  $d1 using 1:2 with boxes  title "rsync --no-whole-file", \
  $d2 using 1:2 with points pt 2 ps 2 title "bytes changed"
